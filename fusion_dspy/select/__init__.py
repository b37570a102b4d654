"""Selection aggregators: Best-of-N with a scorer (LLM rater, reward model, metric) and majority vote."""

from fusion_dspy.select.llm_rater import LLMRater
from fusion_dspy.select.majority import majority_vote
from fusion_dspy.select.reward_model import RewardModelScorer
from fusion_dspy.select.scoring import CallableScorer, Scorer, as_scorer, select_best

__all__ = ["CallableScorer", "LLMRater", "RewardModelScorer", "Scorer", "as_scorer", "majority_vote", "select_best"]
