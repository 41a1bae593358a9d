"""Ground tools: telemetry decoding, archive, review reports, planning, uplink."""
