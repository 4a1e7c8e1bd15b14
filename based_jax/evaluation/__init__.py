"""Document information extraction (SWDE / FDA) evaluation of Based, attention and Mamba LMs.

    from based_jax.evaluation import load_examples, evaluate
    examples = load_examples("swde", limit=64)             # hub parquet, or data="file.jsonl"
    result = evaluate(model, params, tokenizer, examples, task="swde", protocol="lm-eval")

Command line: `based-jax evaluate ...` (`based_jax.evaluation.cli.main(argv)`).
"""

from based_jax.evaluation.data import DataUnavailableError, Example, load_examples
from based_jax.evaluation.metrics import contains, prefix_match
from based_jax.evaluation.prompts import demo_prompt, lm_eval_prompt
from based_jax.evaluation.runner import EvalResult, Prediction, evaluate

__all__ = ["DataUnavailableError", "EvalResult", "Example", "Prediction", "contains",
           "demo_prompt", "evaluate", "lm_eval_prompt", "load_examples", "prefix_match"]
