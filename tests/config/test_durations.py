import pytest

from celltune.config.durations import parse_duration
from celltune.errors import ConfigError


def test_durations_parse_with_their_unit_and_a_plain_number_is_minutes():
    assert parse_duration("20m", flag="--time-budget").total_seconds() == 1200
    assert parse_duration("1.5h", flag="--time-budget").total_seconds() == 5400
    assert parse_duration("90s", flag="--time-budget").total_seconds() == 90
    assert parse_duration("30d", flag="--older-than").total_seconds() == 30 * 86400
    assert parse_duration("3", flag="--time-budget").total_seconds() == 180
    for wrong in ("soon", "0m", "-5m", "2w"):
        with pytest.raises(ConfigError, match=f"--time-budget '{wrong}': give a duration such as 10m"):
            parse_duration(wrong, flag="--time-budget")
