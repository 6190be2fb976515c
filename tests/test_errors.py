from sparks.errors import first_line


def test_first_line_of_a_multi_line_message():
    assert first_line(ValueError("bad header\nmore detail\n")) == "bad header"


def test_first_line_of_an_empty_message_is_the_type_name():
    # an empty message must not raise IndexError while an error is being reported
    assert first_line(KeyError()) == "KeyError"
    assert first_line(RuntimeError("  \n ")) == "RuntimeError"
