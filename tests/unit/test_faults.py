"""Which launch a fault is blamed on (daemon/faults.py)."""

from __future__ import annotations

from farcuda.daemon.faults import STICKY, LaunchLog, describe


def test_launch_log_window():
    log = LaunchLog()
    assert log.window() == (None, None)
    log.launched(7)
    log.synced()
    assert log.window() == (None, (1, 7))
    log.launched(8)
    log.launched(9)
    assert log.window() == ((2, 8), (3, 9))
    log.synced()
    log.launched(4)
    assert log.window() == ((4, 4), (4, 4))


def test_describe_names_the_culprit():
    assert describe(700, (3, "wild"), (3, "wild")) == ("kernel wild (launch 3)",
                                                       "cudaErrorIllegalAddress")
    culprit, err = describe(719, (2, "a"), (5, "b"))
    assert err == "cudaErrorLaunchFailure"
    assert culprit == ("kernel a (launch 2) or one of the 3 launched after it (the last: b, "
                       "launch 5)")
    assert "no kernel since" in describe(700, None, (9, "k"))[0]
    assert describe(700, None, None)[0] == "no kernel was launched"
    assert {700, 710, 719} <= STICKY and 1 not in STICKY and 2 not in STICKY
