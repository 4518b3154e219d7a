"""Jaccard and EPI arithmetic on hand-made plans."""
import pytest

from compressor.engine.plan import GroupPlan, PruningPlan
from compressor.schedules.stability import EpiIndicator, JaccardIndicator, count_similarity, jaccard


def plan(**groups) -> PruningPlan:
    return PruningPlan({name: GroupPlan(8, tuple(kept)) for name, kept in groups.items()})


def test_jaccard_is_the_mean_over_groups_of_intersection_over_union():
    now = plan(a=[0, 1, 2, 3], b=[0, 1])
    before = plan(a=[2, 3, 4, 5], b=[0, 1])
    # a: |{2,3}| / |{0..5}| = 2/6; b: 1
    assert jaccard(now, before) == pytest.approx((2 / 6 + 1) / 2)


def test_count_similarity_ignores_which_channels():
    now = plan(a=[0, 1, 2, 3], b=[0, 1])
    before = plan(a=[4, 5, 6, 7], b=[0, 1, 2, 3])
    # a: same count -> 0 distance; b: |2-4|/(2+4) = 1/3
    assert count_similarity(now, before) == pytest.approx(1 - (0 + 1 / 3) / 2)


def test_jaccard_indicator_compares_two_epochs_back_and_smooths_over_three():
    indicator = JaccardIndicator(threshold=0.999)
    plans = [plan(a=[0, 1]), plan(a=[0, 2]), plan(a=[0, 1]), plan(a=[0, 1]), plan(a=[0, 1]), plan(a=[0, 1])]
    values = [indicator.update(p) for p in plans]
    raw = [0.0, 0.0, 1.0, 1 / 3, 1.0, 1.0]  # epoch 3 compares [0,2] with... see below
    # epoch t compares plan t with plan t-2: (0,1)~(0,1)=1 at t=2, (0,1)~(0,2)=1/3 at t=3
    assert indicator.raw == pytest.approx(raw)
    assert values[-1] == pytest.approx((1 / 3 + 1 + 1) / 3)
    assert not indicator.stable()
    indicator.update(plan(a=[0, 1]))
    assert indicator.stable()


def test_jaccard_plateau_detection():
    indicator = JaccardIndicator()
    for _ in range(6):
        indicator.update(plan(a=[0, 1, 2]))
    assert not indicator.plateaued()  # smoothed 0, 0, .33, .67, 1, 1: still 0.33 above t-2
    indicator.update(plan(a=[0, 1, 2]))
    assert indicator.plateaued()
    rising = JaccardIndicator()
    for kept in ([0], [1], [2], [0, 1], [0, 1, 2], [0, 1, 2]):
        rising.update(plan(a=kept))
    assert not rising.plateaued()


def test_epi_prunes_when_above_threshold_and_rising():
    indicator = EpiIndicator(threshold=0.9, window=2)
    for kept in ([0], [0, 1, 2, 3], [0, 1, 2], [0, 1, 2]):
        indicator.update(plan(a=kept))
    # vs the previous two plans: 0.4, then (0.5 + 6/7) / 2, then (6/7 + 1) / 2
    assert indicator.smoothed == pytest.approx([0.0, 0.4, (0.5 + 6 / 7) / 2, (6 / 7 + 1) / 2])
    assert indicator.stable()  # 0.93 >= 0.9 and above every earlier value
    indicator.update(plan(a=[0, 1, 2]))
    assert indicator.smoothed[-1] == pytest.approx(1.0) and indicator.stable()
    indicator.update(plan(a=[0, 1, 2]))
    assert not indicator.stable()  # 1.0 is no longer rising


def test_indicator_state_round_trips():
    indicator = JaccardIndicator()
    for kept in ([0, 1], [0, 2], [0, 1]):
        indicator.update(plan(a=kept))
    restored = JaccardIndicator()
    restored.load_state(indicator.state())
    assert restored.update(plan(a=[0, 1])) == indicator.update(plan(a=[0, 1]))
