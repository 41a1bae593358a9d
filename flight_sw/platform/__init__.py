"""The flight software's hardware interfaces as transports (issue 15): the world link."""
