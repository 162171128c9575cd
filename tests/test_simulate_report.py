"""simulate call's JSON for a callback, and when it stops following one (pure functions)."""

from __future__ import annotations

from peoples_response.simulate_report import callback_json, following


def test_a_request_whose_next_try_is_far_off_is_reported_after_its_first_try():
    tried = {"cb_state": "pending", "cb_attempts": "1", "cb_result": "machine_hung_up",
             "cb_safe_here": "1", "cb_message": "0"}
    # Ten minutes to the next try: simulate says what the first one met and stops.
    assert not following(tried, retry_s=600)
    assert callback_json(tried) == {"requested": True, "safe_to_call": True,
                                    "message_allowed": False, "attempts": 1,
                                    "outcome": "machine_hung_up",
                                    "last_attempt": "machine_hung_up", "time_to_human_s": None}
    # Tries a second apart (a demo, a test): it follows them to the end.
    assert following(tried, retry_s=1)
    unanswered = {**tried, "cb_result": "no_answer"}
    assert callback_json(unanswered)["outcome"] == "pending"
    # Not tried yet, or being dialled: always followed.
    assert following({"cb_state": "pending", "cb_attempts": "0"}, retry_s=600)
    assert following({"cb_state": "calling", "cb_attempts": "1"}, retry_s=600)


def test_no_request_no_callback_part_and_a_finished_one_says_how_it_ended():
    assert callback_json({"state": "ended"}) is None
    done = {"cb_state": "done", "cb_outcome": "failed", "cb_attempts": "3",
            "cb_result": "no_answer", "cb_safe_here": "", "cb_message": "1"}
    got = callback_json(done)
    assert (got["outcome"], got["attempts"], got["safe_to_call"], got["message_allowed"]) == \
        ("failed", 3, None, True)
    assert not following(done, retry_s=1)
