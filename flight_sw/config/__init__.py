"""Mission configuration: schema, loader and cross-field checks."""

from flight_sw.config.loader import ConfigError, describe, load_mission_config, parse_mission_config
from flight_sw.config.schema import MissionConfig

__all__ = ["ConfigError", "MissionConfig", "describe", "load_mission_config", "parse_mission_config"]
