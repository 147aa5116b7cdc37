"""LearningConfig (a job file's ``[training]`` section): reward names."""

from __future__ import annotations

import re

import pytest
from routeplay.offline_rl import LearningConfig
from routeplay.replay import REWARD_VARIANTS


@pytest.mark.parametrize("reward", REWARD_VARIANTS)
def test_every_reward_name_is_accepted(reward: str) -> None:
    assert LearningConfig(reward=reward).reward == reward


def test_former_reward_name_is_mapped_with_a_deprecation_warning() -> None:
    with pytest.warns(DeprecationWarning, match="'seed000' is deprecated; use 'queue-balance'"):
        config = LearningConfig(reward="seed000")
    assert config.reward == "queue-balance"


def test_unknown_reward_names_the_choices() -> None:
    with pytest.raises(ValueError, match=re.escape("LearningConfig.reward = 'paper'; expected")):
        LearningConfig(reward="paper")
