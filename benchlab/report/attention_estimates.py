"""The estimates of the attention section, read off an explain job's result rows.

Explain jobs write every estimate as four rows (:mod:`benchlab.attention`):
``<metric>`` (the mean), ``<metric>.n``, ``<metric>.ci_low`` and ``<metric>.ci_high``.
Here they become one row each. With one run per model the interval is the
bootstrap interval over images; with several, the runs' means are averaged and
the interval is the Student t interval over runs, with runs - 1 degrees of freedom
(``df``; the p-values read off it use them) and cut to [0, 1] for a share of images
(n then counts the images of all runs together).
"""

from __future__ import annotations

import math
import re

import pandas as pd

from benchlab import stats
from benchlab.report.markdown import DASH

__all__ = ["KEYS", "Lookup", "cell", "count", "estimates", "explained_layers"]

_NAME = re.compile(r"^(?P<base>[a-z_]+)(?:\[(?P<qualifier>[^\]]+)\])?"
                   r"(?:\.(?P<stat>n|ci_low|ci_high))?$")
#: what identifies one estimate
KEYS = ["model", "attack", "explainer", "eps", "base", "qualifier"]
#: estimates that are shares of images (in [0, 1] whatever the runs say)
SHARES = frozenset({"cam_empty_share"})


def estimates(results: pd.DataFrame) -> pd.DataFrame:
    """One row per estimate: the keys, then value, low, high, n and runs.

    ``qualifier`` is "" for the plain metric, e.g. "flipped" or "layer=relu2"
    otherwise. Runs are combined as the module docstring says.
    """
    rows = results[results["explainer"].notna()]
    parsed = rows["metric"].str.extract(_NAME)
    rows = rows.assign(base=parsed["base"], qualifier=parsed["qualifier"].fillna(""),
                       stat=parsed["stat"].fillna("value"),
                       attack=rows["attack"].fillna("clean"))
    rows = rows[rows["base"].notna() & rows["eps"].notna()]
    if rows.empty:
        return pd.DataFrame(columns=[*KEYS, "value", "low", "high", "n", "runs", "df"])
    wide = rows.pivot_table(index=[*KEYS, "run"], columns="stat", values="value",
                            aggfunc="first", dropna=False).reset_index()
    for stat in ("value", "n", "ci_low", "ci_high"):
        if stat not in wide.columns:
            wide[stat] = math.nan
    wide = wide[wide["value"].notna() | wide["n"].notna()]
    out = []
    for key, group in wide.groupby(KEYS, sort=False):
        runs = len(group)
        n = int(group["n"].fillna(0).sum())
        if runs == 1:
            r = group.iloc[0]
            value, low, high, df = r["value"], r["ci_low"], r["ci_high"], math.nan
        else:
            s = stats.summarize(group["value"].tolist())
            value, low, high = s.mean, s.mean - s.ci95, s.mean + s.ci95
            df = s.n - 1 if s.n > 1 else math.nan
            if key[KEYS.index("base")] in SHARES and not math.isnan(value):
                # a share cannot leave [0, 1]: the t interval is cut to that range
                low, high = max(low, 0.0), min(high, 1.0)
        out.append(dict(zip(KEYS, key), value=value, low=low, high=high, n=n, runs=runs,
                        df=df))
    return pd.DataFrame(out)


class Lookup:
    """The estimate of (model, attack, explainer, eps, base, qualifier), or None."""

    def __init__(self, table: pd.DataFrame):
        self.index = {tuple(r[k] for k in KEYS): r for _, r in table.iterrows()}

    def __call__(self, model: str, attack: str, explainer: str, eps: float, base: str,
                 qualifier: str = "") -> pd.Series | None:
        return self.index.get((model, attack, explainer, eps, base, qualifier))


def cell(est: pd.Series | None, digits: int = 3, percent: bool = False) -> str:
    """``value [low, high]`` (a percentage with one decimal if ``percent``), or a dash."""
    if est is None or est["n"] == 0 or pd.isna(est["value"]):
        return DASH
    scale, unit = (100.0, "%") if percent else (1.0, "")
    digits = 1 if percent else digits
    text = f"{est['value'] * scale:.{digits}f}{unit}"
    if not (pd.isna(est["low"]) or pd.isna(est["high"])):
        text += f" [{est['low'] * scale:.{digits}f}, {est['high'] * scale:.{digits}f}]"
    return text


def count(est: pd.Series | None) -> str:
    """The estimate's n (images), or a dash."""
    return DASH if est is None else f"{int(est['n'])}"


def explained_layers(results: pd.DataFrame) -> dict[tuple[str, str], str]:
    """(model, explainer) -> the layer the explainer used, where it recorded one."""
    rows = results[results["metric"].astype(str).str.startswith("explained_layer[")]
    return {(r["model"], r["explainer"]): r["metric"][len("explained_layer["):-1]
            for _, r in rows.iterrows()}
