"""A silent server's charge factor under 429s it did not cause (issue 30), window by window:
the opening burst at :40 answered without a token reading, the factor a guess the probes
bring down, and 429s asking 2 s (a provider's own overload) that no shape of the quota gives.
The README stack over seeds: :mod:`tests.admission.test_silent_foreign_429s`."""

import pytest

from llmguard._admission.ratelimit import apart
from llmguard._admission.ratelimit.charge import OPENING
from llmguard._admission.ratelimit.window import Quota, Window

MARGIN = 0.05


def opened() -> Window:
    """A learned RPM and TPM quota from a server that says nothing, its opening burst at :40
    (the token quota full as counted at the opening guess) answered at :42 without a token
    reading: the charge is silent, probed from now on."""
    w = Window((Quota(60, 60.0 + MARGIN, False, learn=True, margin=MARGIN),
                Quota(10_000, 60.0 + MARGIN, True, learn=True, margin=MARGIN)))
    w.shape.quiet = True
    burst = []
    while (entry := w.take(40.0, 212)) is not None:
        burst.append(entry)
    for entry in burst:
        w.adjust(42.0, entry, 212)  # answered, nothing said about tokens
    return w


def test_the_charges_probe_waits_only_for_a_429s_pause() -> None:
    """Answered at :42, the first probe of the charge (room at our bare estimates) meets a
    stray 429 asking 2 s: the next probe may go when the pause ends. Waiting for the log
    instead (a window later, or the clock minute's probe), the bucket idled 14 s with room."""
    w = opened()
    assert w.charge.silent
    probe = w.take(42.0, 212)
    assert probe is not None and w.charge.probing is probe
    w.refused(42.05, probe, 2.0)
    assert w.charge.silent and w.wait(42.05, 212) == pytest.approx(2.0, abs=0.01)


def test_a_retry_refused_again_after_the_pause_asked_confirms_no_factor() -> None:
    """The charge's first probe, refused asking 2 s, is only doubted; its retry when the
    pause ends (nothing of ours sent between) was promised room by that pause: refused
    again, one of the two was no quota's (both at random), and the guess is still probed.
    Read as a repeat, it kept the guess (1.17x where the server charges our estimate)."""
    w = opened()
    probe = w.take(42.0, 212)
    w.refused(42.05, probe, 2.0)
    retry = w.take(44.05, 212)
    assert retry is not None and w.charge.probing is retry
    w.refused(44.1, retry, 2.0)
    assert w.charge.how == "silent" and w.charge.factor == OPENING


def test_a_429_asking_more_than_a_learned_bucket_refills_keeps_no_guessed_factor() -> None:
    """Learned to be a token bucket, its charge a guess the probes bring down (served ones
    bound it at 1.15x), paced by it for a minute and a half: a 429 at the edge of the bucket
    as counted asking 2 s, longer than the bucket refills all of a request at the most it
    charges (1.5 s), is no refusal of the bucket's: the guess is still probed. Taken for its
    own, it kept the guess (1.2x) to the end (1.05x the ideal where the server charges our
    estimate)."""
    w = opened()
    w.shape.learn("bucket", "learned, as :mod:`.silent` does after the minute")
    apart.bucket(w, 42.0)
    w.charge.paced = OPENING  # (what the probes it served allow)
    now, last = 42.0, None
    while now < 130.0:  # paced by the bucket, each answered 2 s later
        if (entry := w.take(now, 212)) is not None:
            last = entry
            if w.charge.probing is not entry:
                w.adjust(now + 2.0, entry, 212)
        now += 0.25
    assert last is not None and w.charge.how == "silent"
    w.refused(last.time + 0.05, last, 2.0)
    assert w.charge.how == "silent"
