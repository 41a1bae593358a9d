"""TM/TC: CCSDS/PUS packets and the shared telemetry dictionary."""
