"""How times read to users: rounded up, in seconds until a minute and a half is past."""

from bot import texts


def test_times_read_as_people_would_say_them() -> None:
    # A wait of 61 s read "about 2 min"; 59.5 s read "60 s" and a moment later "2 min".
    assert texts.minutes(61) == "61 s"
    assert texts.minutes(59.5) == "60 s"
    assert texts.minutes(99) == "99 s" and texts.minutes(100) == "2 min"
    assert texts.minutes(0.2) == "1 s"
    # Over a limit never reads as equal to it: 601 s is over a 600 s limit.
    assert texts.minutes(600) == "10 min" and texts.minutes(601) == "11 min"
    assert texts.minutes(None) == "a moment"
