"""The retraining policy backtest: what each policy would have scored, and what it cost, on the
history.

Every family is fitted as of every month once (:func:`fit_history`, cached on disk and reused by
every policy), as a training round fits it: the same window, split, parameters and seeds. A policy
is then replayed month by month (:func:`run_policy`): the live champion scores the month (its
month-ahead ROC AUC), the month's signals are measured against the champion's reference data (its
round's validation rows) as ``drift_report`` measures them, ``policy.decide`` says whether to
retrain (the function the retraining sensor calls), and a retrain runs the promotion rule of
``champion_model`` on that round's candidates (``registry.rank``, ``select``,
``comparison_rows``, ``decide``). A retrain as of month M serves from M+1 on, as in the loop.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bank_marketing.monitoring.measure import Measurement, Reference, measure
from bank_marketing.monitoring.policy import RetrainRule, decide
from bank_marketing.training import registry
from bank_marketing.training.config import CandidateParams, Inputs, PromotionRule, WindowSplit
from bank_marketing.training.features import labels
from bank_marketing.training.metrics import roc_auc_standard_error
from bank_marketing.training.tracking import CandidateRecord
from bank_marketing.training.windows import (
    VALIDATION,
    assemble_window,
    call_days,
    describe,
    split_window,
    window_months,
)

FIRST_AS_OF = "2008-12"
# Bump when what a cached round holds, or how it is computed, changes.
CACHE_FORMAT = 1


@dataclass(frozen=True)
class Model:
    """One family fitted as of one month: its validation scores and its probability for every
    contact of the history (rows in the history's order)."""

    family: str
    as_of: str  # YYYY-MM
    version: int  # the order it would have been registered in
    validation_roc_auc: float
    validation_se: float
    probability: np.ndarray = field(repr=False)

    @property
    def key(self) -> str:
        return f"{self.family} as of {self.as_of}"


@dataclass(frozen=True)
class Round:
    """A training round as of a month: its validation rows (positions) and its candidates."""

    as_of: str
    validation: np.ndarray = field(repr=False)
    models: dict[str, Model] = field(repr=False)


@dataclass
class History:
    """All contacts (with their recovered month) and every round fitted on them."""

    frame: pd.DataFrame
    rounds: dict[str, Round]
    month_rows: dict[str, np.ndarray] = field(init=False, repr=False)
    y: np.ndarray = field(init=False, repr=False)
    days: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.month_rows = _rows_by_month(self.frame)
        self.y = labels(self.frame)
        self.days = call_days(self.frame).to_numpy()


def _roc_auc(y: np.ndarray, probability: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, probability))


def month_keys(first: str, last: str) -> list[str]:
    """``YYYY-MM`` from ``first`` to ``last``, both included."""
    return [f"{m:%Y-%m}" for m in pd.date_range(f"{first}-01", f"{last}-01", freq="MS")]


def previous_month(month: str) -> str:
    return f"{pd.Timestamp(f'{month}-01') - pd.offsets.MonthBegin(1):%Y-%m}"


@dataclass(frozen=True)
class Setup:
    """What a backtest fits with: every contact (with its recovered month) and the training
    defaults every round starts from."""

    frame: pd.DataFrame
    data_sha256: str
    params: dict[str, CandidateParams]
    window: WindowSplit
    promotion: PromotionRule


def setup(source: str, cache_dir: Path, training_config: Path | None) -> Setup:
    """The contacts of ``source`` and the training defaults, with a file of training defaults
    (``BANK_MARKETING_TRAINING_CONFIG``) applied as every round applies it."""
    from bank_marketing.data.months import recover_months
    from bank_marketing.data.source import load_contacts
    from bank_marketing.training.config import FAMILY_PARAMS, read_training_config

    defaults = read_training_config(training_config) if training_config else {}
    loaded = load_contacts(source, cache_dir)
    return Setup(
        frame=loaded.frame.assign(contact_month=recover_months(loaded.frame["month"])),
        data_sha256=loaded.sha256,
        params={
            family: model(**defaults.get(f"{family}_candidate", {}))
            for family, model in FAMILY_PARAMS.items()
        },
        window=WindowSplit(**defaults.get("training_set", {})),
        promotion=PromotionRule(**defaults.get("champion_model", {})),
    )


def cache_key(
    data_sha256: str,
    inputs: Inputs,
    window: WindowSplit,
    params: Mapping[str, CandidateParams],
) -> str:
    """What a cached round depends on, hashed: the data, inputs, window, split and parameters."""
    described = {
        "format": CACHE_FORMAT,
        "data": data_sha256,
        "inputs": inputs.model_dump(),
        "window": window.model_dump(),
        "params": {family: p.model_dump() for family, p in sorted(params.items())},
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


def _fit_round(
    frame: pd.DataFrame,
    as_of: str,
    inputs: Inputs,
    window: WindowSplit,
    params: Mapping[str, CandidateParams],
) -> dict[str, np.ndarray]:
    """One round's arrays: validation positions, and each family's scores and probabilities."""
    by_month = {
        f"{key}-01": frame.iloc[rows] for key, rows in _rows_by_month(frame).items() if key <= as_of
    }
    stamp = pd.Timestamp(f"{as_of}-01")
    where = describe(window_months(stamp, window.window_months))
    chosen = assemble_window(by_month, stamp, window.window_months)
    split = split_window(chosen, window.validation_share, window.seed, where, by=window.split_by)
    train = split[split["split"] != VALIDATION].drop(columns="split")
    validation = split[split["split"] == VALIDATION].drop(columns="split")
    arrays: dict[str, np.ndarray] = {
        "validation": frame.index.get_indexer(validation.index).astype(np.int64)
    }
    for family, family_params in params.items():
        fitted = family_params.fit(family, inputs, train, validation)
        standard_error = roc_auc_standard_error(
            labels(validation), fitted.validation_probability, call_days(validation)
        )
        arrays[f"{family}.scores"] = np.array(
            [fitted.validation_metrics["roc_auc"], standard_error], dtype=np.float64
        )
        arrays[f"{family}.probability"] = fitted.pipeline.predict_proba(frame)[:, 1].astype(
            np.float64
        )
    return arrays


def _rows_by_month(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each month's (``YYYY-MM``) row positions in ``frame``."""
    keys = frame["contact_month"].dt.strftime("%Y-%m").to_numpy()
    return {key: np.flatnonzero(keys == key) for key in np.unique(keys)}


def fit_history(
    prepared: Setup,
    as_ofs: Sequence[str],
    *,
    inputs: Inputs,
    cache_dir: Path,
    jobs: int = 2,
    progress: Callable[[Iterable[Any], int], Iterable[Any]] | None = None,
) -> History:
    """Every family fitted as of every month in ``as_ofs``, read from ``cache_dir`` when a round
    was fitted before with the same data, inputs, window and parameters.

    Rounds not in the cache are fitted in ``jobs`` processes and each is written to the cache as
    it finishes.
    """
    from joblib import Parallel, delayed

    frame, window, params = prepared.frame, prepared.window, prepared.params

    folder = cache_dir / cache_key(prepared.data_sha256, inputs, window, params)
    folder.mkdir(parents=True, exist_ok=True)
    missing = [as_of for as_of in as_ofs if not (folder / f"{as_of}.npz").exists()]
    if missing:
        tasks = (delayed(_fit_round)(frame, as_of, inputs, window, params) for as_of in missing)
        results = Parallel(n_jobs=jobs, return_as="generator")(tasks)
        if progress is not None:
            results = progress(results, len(missing))
        for as_of, arrays in zip(missing, results, strict=True):
            partial = folder / f".{as_of}.partial.npz"
            np.savez(partial, **arrays)
            os.replace(partial, folder / f"{as_of}.npz")
    rounds = {}
    version = 0
    for as_of in as_ofs:
        with np.load(folder / f"{as_of}.npz") as stored:
            models = {}
            for family in params:
                version += 1
                roc_auc, standard_error = stored[f"{family}.scores"]
                models[family] = Model(
                    family=family,
                    as_of=as_of,
                    version=version,
                    validation_roc_auc=float(roc_auc),
                    validation_se=float(standard_error),
                    probability=stored[f"{family}.probability"],
                )
            rounds[as_of] = Round(as_of, stored["validation"], models)
    return History(frame, rounds)


class Backtest:
    """Replays policies on a fitted history, memoizing what every policy shares: the signals of a
    model on a month, and the promotion of a round against a given champion."""

    def __init__(self, history: History, promotion: PromotionRule, seed: int = 0) -> None:
        self.history = history
        self.promotion = promotion
        self.seed = seed
        self._measured: dict[tuple[str, str], Measurement] = {}
        self._references: dict[str, Reference] = {}
        self._promoted: dict[tuple[str, str | None], tuple[Model, registry.Decision]] = {}

    def month_roc_auc(self, model: Model, month: str) -> float:
        rows = self.history.month_rows.get(month, np.empty(0, dtype=np.int64))
        y = self.history.y[rows]
        if len(rows) == 0 or y.min() == y.max():
            return math.nan
        return _roc_auc(y, model.probability[rows])

    def measure(self, model: Model, month: str) -> Measurement:
        """The signals ``drift_report`` records for ``model`` on ``month`` (the same code)."""
        memo = (model.key, month)
        if memo not in self._measured:
            history = self.history
            if model.key not in self._references:
                reference = history.rounds[model.as_of].validation
                self._references[model.key] = Reference.build(
                    model.probability[reference],
                    history.y[reference],
                    history.days[reference],
                    expected_roc_auc=model.validation_roc_auc,
                    expected_roc_auc_se=model.validation_se,
                    seed=self.seed,
                )
            rows = history.month_rows.get(month, np.empty(0, dtype=np.int64))
            self._measured[memo] = measure(
                self._references[model.key],
                model.probability[rows],
                history.y[rows],
                history.days[rows],
                seed=self.seed,
            )
        return self._measured[memo]

    def promote(self, as_of: str, champion: Model | None) -> tuple[Model, registry.Decision]:
        """The round as of ``as_of`` against ``champion``, decided as ``champion_model`` decides."""
        memo = (as_of, None if champion is None else champion.key)
        if memo in self._promoted:
            return self._promoted[memo]
        round_ = self.history.rounds[as_of]
        records = {
            str(model.version): CandidateRecord(
                family=model.family,
                run_id="",
                model_version=str(model.version),
                model_uri="",
                train_metrics={},
                validation_metrics={"roc_auc": model.validation_roc_auc},
                fit_seconds=0.0,
                validation_roc_auc_standard_error=model.validation_se,
            )
            for model in round_.models.values()
        }
        selection = registry.select(
            registry.rank(list(records.values())),
            standard_errors=self.promotion.standard_errors,
            order=self.promotion.simplicity_order,
        )
        challenger = round_.models[selection.candidate.family]
        validation = self.history.frame.iloc[round_.validation]
        compared, compared_on = registry.comparison_rows(
            validation,
            None if champion is None else champion.as_of,
            None if champion is None else str(champion.version),
        )
        rows = round_.validation[validation.index.isin(compared.index)]
        y = self.history.y[rows]

        def compared_roc_auc(model: Model) -> float:
            return _roc_auc(y, model.probability[rows])

        decision = registry.decide(
            challenger_version=str(challenger.version),
            challenger_roc_auc=compared_roc_auc(challenger),
            challenger_problem=None,
            champion_version=None if champion is None else str(champion.version),
            champion_roc_auc=None if champion is None else compared_roc_auc(champion),
            champion_problem=None,
            margin=self.promotion.margin,
            floor=self.promotion.roc_auc_floor,
            compared_on=compared_on,
            challenger_validation_roc_auc=challenger.validation_roc_auc,
            selection=selection.reason,
        )
        live = challenger if decision.promoted or champion is None else champion
        self._promoted[memo] = (live, decision)
        return live, decision

    def run(self, name: str, rule: RetrainRule, months: Sequence[str]) -> PolicyRun:
        """``rule`` replayed over ``months`` (YYYY-MM) from a first champion as of the month
        before the first; a retrain as of the last month would serve no month of the range, so
        none is made."""
        first_as_of = previous_month(months[0])
        champion, _ = self.promote(first_as_of, None)
        last_trained = f"{first_as_of}-01"
        rows = []
        for place, month in enumerate(months):
            measured = self.measure(champion, month)
            verdict = decide(rule, measured.signals(f"{month}-01"), last_trained)
            retrain = verdict.retrain and place < len(months) - 1
            after = champion
            if retrain:
                after, _ = self.promote(month, champion)
                last_trained = f"{month}-01"
            rows.append(
                {
                    "policy": name,
                    "month": month,
                    "scored_by": champion.key,
                    "roc_auc": self.month_roc_auc(champion, month),
                    "prediction_drift": measured.prediction_drift,
                    "drift_p_value": measured.drift_p_value,
                    "drift_z": measured.drift_z,
                    "realized_roc_auc": measured.realized_roc_auc,
                    "realized_z": measured.realized_z,
                    "estimated_roc_auc": measured.estimated_roc_auc,
                    "estimated_drop": measured.estimated_drop,
                    "expected_roc_auc": measured.expected_roc_auc,
                    "retrained": retrain,
                    "champion_after": after.key,
                    "reason": verdict.reason,
                }
            )
            champion = after
        return PolicyRun(name, rule, pd.DataFrame(rows))


@dataclass(frozen=True)
class PolicyRun:
    """A policy's months: the ROC AUC of the live champion, its signals, its retrains."""

    name: str
    rule: RetrainRule
    months: pd.DataFrame

    def summary(self, never: PolicyRun | None = None) -> dict[str, Any]:
        frame = self.months
        year = frame["month"].str[:4]
        retrains = int(frame["retrained"].sum())
        mean = float(frame["roc_auc"].mean())
        gain = math.nan
        if never is not None and retrains:
            gain = (mean - float(never.months["roc_auc"].mean())) / retrains
        return {
            "policy": self.name,
            "retrains": retrains,
            "mean_roc_auc_2009": float(frame["roc_auc"][year == "2009"].mean()),
            "mean_roc_auc_2010": float(frame["roc_auc"][year == "2010"].mean()),
            "mean_roc_auc": mean,
            "auc_gain_per_retrain": gain,
            "retrains_2009": int(frame["retrained"][year == "2009"].sum()),
            "retrains_2010": int(frame["retrained"][year == "2010"].sum()),
            "rule": describe_rule(self.rule),
        }


def describe_rule(rule: RetrainRule) -> str:
    """The settings of a rule that matter, as ``BANK_MARKETING_RETRAIN_*`` values would set them."""
    if not rule.signals:
        return "signals=(none)"
    parts = [f"signals={','.join(rule.signals)}"]
    if len(rule.signals) > 1:
        parts.append(f"combine={rule.combine}")
    thresholds = {
        "prediction_drift": f"prediction_drift>{rule.prediction_drift_threshold:g}",
        "drift_p_value": f"drift_p_value<{rule.drift_p_value_threshold:g}",
        "drift_z": f"drift_z>{rule.drift_z_threshold:g}",
        "realized_performance": f"realized_z<-{rule.realized_z_threshold:g}",
        "estimated_performance": f"estimated_drop>{rule.estimated_drop_threshold:g}",
        "drifted_share": f"drifted_share>{rule.drifted_share_threshold:g}",
        "schedule": f"schedule_months={rule.schedule_months}",
    }
    parts += [thresholds[signal] for signal in rule.signals]
    parts.append(f"cooldown_months={rule.cooldown_months}")
    return " ".join(parts)


# The retrain budget the default policy is chosen within: at most this many retrains as of the
# 12 months of 2009, half of them (the replay's goal allows 12 retrains over 23 months).
BUDGET_2009 = 6
SCHEDULES = (1, 2, 3, 4, 6)
# The smallest p-value 500 resamples give is 1/501, about 0.002.
P_VALUES = (0.005, 0.01, 0.05)
DRIFT_Z = (10.0, 20.0, 40.0, 80.0)
REALIZED_Z = (1.0, 2.0, 3.0)
ESTIMATED_DROPS = (0.02, 0.05, 0.1)
COOLDOWNS = (1, 2)
TODAY = "prediction drift > 0.1, cooldown 2 (the rule before this backtest)"


def schedule_name(months: int) -> str:
    return "every month" if months == 1 else f"every {months} months"


def catalog() -> dict[str, RetrainRule]:
    """The policies every backtest runs: never, fixed schedules, the prediction-drift rule as it
    was, and each new signal at a few thresholds and cooldowns."""
    rules: dict[str, RetrainRule] = {"never": RetrainRule(signals=[])}
    for months in SCHEDULES:
        rules[schedule_name(months)] = RetrainRule(
            signals=["schedule"], schedule_months=months, cooldown_months=0
        )
    rules[TODAY] = RetrainRule(
        signals=["prediction_drift"], prediction_drift_threshold=0.1, cooldown_months=2
    )
    for cooldown in COOLDOWNS:
        for p in P_VALUES:
            rules[f"drift p-value < {p:g}, cooldown {cooldown}"] = RetrainRule(
                signals=["drift_p_value"], drift_p_value_threshold=p, cooldown_months=cooldown
            )
        for z in DRIFT_Z:
            rules[f"drift z > {z:g}, cooldown {cooldown}"] = RetrainRule(
                signals=["drift_z"], drift_z_threshold=z, cooldown_months=cooldown
            )
        for z in REALIZED_Z:
            rules[f"realized ROC AUC z < -{z:g}, cooldown {cooldown}"] = RetrainRule(
                signals=["realized_performance"], realized_z_threshold=z, cooldown_months=cooldown
            )
        for drop in ESTIMATED_DROPS:
            rules[f"CBPE drop > {drop:g}, cooldown {cooldown}"] = RetrainRule(
                signals=["estimated_performance"],
                estimated_drop_threshold=drop,
                cooldown_months=cooldown,
            )
    return rules


def is_schedule(rule: RetrainRule) -> bool:
    """A fixed schedule, never retraining included: what a signal policy must beat."""
    return rule.signals in ([], ["schedule"])


def within_budget(summary: Mapping[str, Any]) -> bool:
    return summary["retrains_2009"] <= BUDGET_2009


def best_by_2009(summaries: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The best mean ROC AUC of 2009 within the budget; fewer retrains break ties."""
    eligible = [s for s in summaries if within_budget(s)]
    if not eligible:
        return None
    return max(eligible, key=lambda s: (s["mean_roc_auc_2009"], -s["retrains_2009"]))


def combinations(
    rules: Mapping[str, RetrainRule], summaries: Sequence[Mapping[str, Any]]
) -> dict[str, RetrainRule]:
    """The best threshold of each signal on 2009, combined two by two (any, all), and each with
    a schedule of 3, 4 or 6 months behind it."""
    best: dict[str, RetrainRule] = {}
    for signal in ("drift_p_value", "drift_z", "realized_performance", "estimated_performance"):
        chosen = best_by_2009([s for s in summaries if rules[s["policy"]].signals == [signal]])
        if chosen is not None:
            best[signal] = rules[chosen["policy"]]
    combined = {}
    names = sorted(best)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            a, b = best[first], best[second]
            for combine in ("any", "all"):
                rule = a.model_copy(
                    update={
                        "signals": [first, second],
                        "combine": combine,
                        "drift_p_value_threshold": _pick(a, b, "drift_p_value_threshold"),
                        "drift_z_threshold": _pick(a, b, "drift_z_threshold"),
                        "realized_z_threshold": _pick(a, b, "realized_z_threshold"),
                        "estimated_drop_threshold": _pick(a, b, "estimated_drop_threshold"),
                        "cooldown_months": min(a.cooldown_months, b.cooldown_months),
                    }
                )
                word = " or " if combine == "any" else " and "
                name = word.join(_short(rule, signal) for signal in rule.signals)
                combined[f"{name}, cooldown {rule.cooldown_months}"] = rule
    # A signal with a schedule behind it: retrain on the signal, or when the schedule is due.
    for signal, rule in best.items():
        for months in SCHEDULES[2:]:
            fallback = rule.model_copy(
                update={
                    "signals": [signal, "schedule"],
                    "combine": "any",
                    "schedule_months": months,
                }
            )
            name = f"{_short(rule, signal)} or {schedule_name(months)}"
            combined[f"{name}, cooldown {rule.cooldown_months}"] = fallback
    return combined


def _short(rule: RetrainRule, signal: str) -> str:
    return {
        "drift_p_value": f"drift p-value < {rule.drift_p_value_threshold:g}",
        "drift_z": f"drift z > {rule.drift_z_threshold:g}",
        "realized_performance": f"realized ROC AUC z < -{rule.realized_z_threshold:g}",
        "estimated_performance": f"CBPE drop > {rule.estimated_drop_threshold:g}",
    }[signal]


def _pick(a: RetrainRule, b: RetrainRule, name: str) -> Any:
    """The value of a threshold from the rule that uses it (the other keeps the default)."""
    signal = {
        "drift_p_value_threshold": "drift_p_value",
        "drift_z_threshold": "drift_z",
        "realized_z_threshold": "realized_performance",
        "estimated_drop_threshold": "estimated_performance",
    }[name]
    return getattr(a if signal in a.signals else b, name)


@dataclass(frozen=True)
class Choice:
    """The default policy chosen on 2009, the schedule it is compared with, and why."""

    policy: str
    schedule: str
    reason: str


def choose(summaries: Sequence[Mapping[str, Any]], rules: Mapping[str, RetrainRule]) -> Choice:
    """Chosen on 2009 only: the best signal policy within the budget if it beats the best fixed
    schedule within the budget with no more retrains in 2009; otherwise that schedule."""
    schedules = [s for s in summaries if is_schedule(rules[s["policy"]])]
    signal_policies = [s for s in summaries if not is_schedule(rules[s["policy"]])]
    schedule = best_by_2009(schedules)
    assert schedule is not None, "never retraining is within the budget"
    best = best_by_2009(signal_policies)
    if best is not None:
        fair = best_by_2009([s for s in schedules if s["retrains_2009"] <= best["retrains_2009"]])
        assert fair is not None, "never retraining has the fewest retrains"
        if best["mean_roc_auc_2009"] > fair["mean_roc_auc_2009"]:
            return Choice(
                best["policy"],
                fair["policy"],
                f"on 2009 {best['policy']} scores {best['mean_roc_auc_2009']:.4f} with "
                f"{best['retrains_2009']} retrains, above the best fixed schedule with as many "
                f"retrains or fewer, {fair['policy']} ({fair['mean_roc_auc_2009']:.4f}, "
                f"{fair['retrains_2009']} retrains)",
            )
        return Choice(
            schedule["policy"],
            schedule["policy"],
            f"on 2009 no signal policy within {BUDGET_2009} retrains beats the fixed schedules "
            f"with as many retrains or fewer (the best signal policy, {best['policy']}, scores "
            f"{best['mean_roc_auc_2009']:.4f} with {best['retrains_2009']} retrains; "
            f"{fair['policy']} {fair['mean_roc_auc_2009']:.4f} with {fair['retrains_2009']}); "
            f"the default is the best schedule within the budget, {schedule['policy']} "
            f"({schedule['mean_roc_auc_2009']:.4f})",
        )
    return Choice(
        schedule["policy"],
        schedule["policy"],
        f"no signal policy stays within {BUDGET_2009} retrains in 2009; the default is the best "
        f"schedule within the budget, {schedule['policy']}",
    )


@dataclass(frozen=True)
class Confirmation:
    """What 2010, held out, says of the choice made on 2009, and the default that follows."""

    default: str
    confirmed: bool
    reason: str


def confirm(
    choice: Choice, summaries: Sequence[Mapping[str, Any]], rules: Mapping[str, RetrainRule]
) -> Confirmation:
    """The choice is kept if, on 2010, it beats the best fixed schedule with as many retrains in
    2010 or fewer; otherwise the default is the fixed schedule it is equivalent to (the same
    number of retrains over the whole range, or the nearest; the better on 2009 on a tie)."""
    by_name = {s["policy"]: s for s in summaries}
    chosen = by_name[choice.policy]
    if is_schedule(rules[choice.policy]):
        return Confirmation(
            choice.policy, True, f"the choice on 2009 is a schedule, {choice.policy}"
        )
    schedules = [s for s in summaries if is_schedule(rules[s["policy"]])]
    fair = max(
        (s for s in schedules if s["retrains_2010"] <= chosen["retrains_2010"]),
        key=lambda s: (s["mean_roc_auc_2010"], -s["retrains_2010"]),
    )
    scores = (
        f"on 2010 (held out) {choice.policy} scores {chosen['mean_roc_auc_2010']:.4f} with "
        f"{chosen['retrains_2010']} retrains, {fair['policy']} {fair['mean_roc_auc_2010']:.4f} "
        f"with {fair['retrains_2010']}"
    )
    if chosen["mean_roc_auc_2010"] > fair["mean_roc_auc_2010"]:
        return Confirmation(choice.policy, True, f"{scores}: confirmed")
    equivalent = min(
        (s for s in schedules if s["retrains"] > 0),
        key=lambda s: (abs(s["retrains"] - chosen["retrains"]), -s["mean_roc_auc_2009"]),
    )
    return Confirmation(
        equivalent["policy"],
        False,
        f"{scores}: not confirmed, so the default is the fixed schedule with as many retrains "
        f"({equivalent['retrains']} against {chosen['retrains']}), {equivalent['policy']}",
    )


@dataclass(frozen=True)
class Tracking:
    """How well the label-free estimate (CBPE) followed the realized ROC AUC, month by month."""

    policy: str
    months: int
    mean_absolute_error: float
    correlation: float


def tracking(run: PolicyRun) -> Tracking:
    months = run.months.dropna(subset=["realized_roc_auc", "estimated_roc_auc"])
    error = (months["estimated_roc_auc"] - months["realized_roc_auc"]).abs()
    correlation = (
        float(np.corrcoef(months["estimated_roc_auc"], months["realized_roc_auc"])[0, 1])
        if len(months) > 2
        else math.nan
    )
    return Tracking(run.name, len(months), float(error.mean()), correlation)


@dataclass
class Outcome:
    """A whole backtest: every policy's summary and months, the choice, and CBPE's tracking."""

    summaries: pd.DataFrame
    months: pd.DataFrame
    choice: Choice
    confirmation: Confirmation
    tracking: list[Tracking]
    rules: dict[str, RetrainRule]


def backtest(
    history: History,
    promotion: PromotionRule,
    months: Sequence[str],
    *,
    progress: Callable[[Iterable[Any], int], Iterable[Any]] | None = None,
) -> Outcome:
    """Every policy of the catalog, then the best two-signal combinations, on ``months``; the
    default chosen on 2009 (:func:`choose`)."""
    runner = Backtest(history, promotion)
    rules = catalog()

    def run_all(batch: Mapping[str, RetrainRule]) -> list[PolicyRun]:
        items: Iterable[tuple[str, RetrainRule]] = list(batch.items())
        if progress is not None:
            items = progress(items, len(batch))
        return [runner.run(name, rule, months) for name, rule in items]

    runs = run_all(rules)
    never = runs[0]
    summaries = [run.summary(never) for run in runs]
    extra = combinations(rules, summaries)
    rules.update(extra)
    more = run_all(extra)
    runs += more
    summaries += [run.summary(never) for run in more]
    by_name = {run.name: run for run in runs}
    choice = choose(summaries, rules)
    return Outcome(
        summaries=pd.DataFrame(summaries),
        months=pd.concat([run.months for run in runs], ignore_index=True),
        choice=choice,
        confirmation=confirm(choice, summaries, rules),
        tracking=[tracking(by_name["never"]), tracking(by_name[schedule_name(1)])],
        rules=rules,
    )


def plot(outcome: Outcome, path: Path) -> Path:
    """Mean monthly ROC AUC against retrains, 2009 (where the default is chosen) beside 2010
    (held out): schedules as a line, signal policies as points, the default ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = outcome.summaries
    schedule = frame["policy"].map(lambda name: is_schedule(outcome.rules[name]))
    figure, panels = plt.subplots(1, 2, figsize=(12, 4.8))
    for axes, year in zip(panels, ("2009", "2010"), strict=True):
        x, y = f"retrains_{year}", f"mean_roc_auc_{year}"
        fixed = frame[schedule].sort_values(x)
        axes.plot(fixed[x], fixed[y], marker="s", color="black", label="fixed schedules, never")
        for _, row in fixed.iterrows():
            axes.annotate(
                row["policy"],
                (row[x], row[y]),
                fontsize=7,
                xytext=(3, -9),
                textcoords="offset points",
            )
        others = frame[~schedule]
        for signal, color in (
            ("prediction_drift", "tab:red"),
            ("drift_p_value", "tab:orange"),
            ("drift_z", "tab:brown"),
            ("realized_performance", "tab:blue"),
            ("estimated_performance", "tab:green"),
        ):
            alone = [outcome.rules[name].signals == [signal] for name in others["policy"]]
            chosen = others[alone]
            axes.scatter(chosen[x], chosen[y], color=color, alpha=0.8, label=signal)
        combined = others[others["policy"].map(lambda n: len(outcome.rules[n].signals) > 1)]
        axes.scatter(combined[x], combined[y], color="tab:purple", marker="^", label="two signals")
        chosen = frame[frame["policy"] == outcome.choice.policy]
        axes.scatter(
            chosen[x],
            chosen[y],
            s=220,
            facecolors="none",
            edgecolors="black",
            linewidths=2,
            label="chosen on 2009",
        )
        default = frame[frame["policy"] == outcome.confirmation.default]
        axes.scatter(
            default[x],
            default[y],
            s=360,
            marker="*",
            facecolors="none",
            edgecolors="tab:red",
            linewidths=1.5,
            label="the default",
        )
        axes.set_xlabel(f"retrains as of months of {year}")
        axes.set_title(f"{year}" + (": choose" if year == "2009" else ": held out, report"))
        axes.grid(alpha=0.3)
    for axes in panels:
        axes.set_ylabel("mean monthly ROC AUC (month-ahead)")
    panels[1].legend(loc="lower right", fontsize=7)
    figure.suptitle("bank-marketing: retraining policies on the history")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path
