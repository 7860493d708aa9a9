"""Stop sequences end generation and are never emitted, even when split across deltas."""

from services.llm.stopping import StopSequenceFilter


def _run(stops, deltas):
    stop_filter = StopSequenceFilter(stops)
    out = []
    for delta in deltas:
        out.append(stop_filter.push(delta))
        if stop_filter.stopped:
            break
    out.append(stop_filter.flush())
    return "".join(out), stop_filter.stopped


def test_no_stops_passes_everything():
    assert _run([], ["a", "b"]) == ("ab", False)


def test_stop_inside_one_delta():
    assert _run(["END"], ["Hello END world"]) == ("Hello ", True)


def test_stop_split_over_deltas_is_never_emitted():
    stop_filter = StopSequenceFilter(["\n\n"])
    assert stop_filter.push("one\n") == "one"
    assert stop_filter.push("\ntwo") == ""
    assert stop_filter.stopped


def test_held_back_text_is_released_when_it_is_not_a_stop():
    assert _run(["STOP"], ["ST", "AR", "T"]) == ("START", False)


def test_earliest_of_several_stops_wins():
    assert _run(["b", "a"], ["xxab"]) == ("xx", True)
