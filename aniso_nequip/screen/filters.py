"""The paper's filters of a candidate pool, each reporting what it removed.

In order (the first rule that fails removes a crystal): energy above hull below
``max_e_above_hull`` (eV/atom), band gap above ``min_band_gap`` (eV), at most ``max_sites``
sites, not made only of noble gases and/or hydrogen, and not in the training set. A metadata rule
is skipped for a crystal without that metadata (counted as ``no_metadata``); a threshold of
``None`` switches a rule off. Structures that cannot be screened (refused by
:mod:`~aniso_nequip.data.validation`, elements a model does not know included) are skipped and
listed separately with their problem, and screened crystals with elements the models never saw in
training are listed as a warning.
"""

import dataclasses
from typing import Dict, Iterable, List, Optional

import ase

from ..data.matching import StructureIndex, crystal_id
from ..data.validation import elements_not_in

NOBLE_GASES_AND_HYDROGEN = frozenset({"H", "He", "Ne", "Ar", "Kr", "Xe", "Rn"})


@dataclasses.dataclass
class Thresholds:
    """Pool filter thresholds (``None``: rule off); defaults are the paper's."""

    max_e_above_hull: Optional[float] = 0.05
    min_band_gap: Optional[float] = 0.5
    max_sites: Optional[int] = 39


def label(atoms: ase.Atoms, source: str) -> str:
    """How reports name a crystal: its id, else where it came from."""
    return crystal_id(atoms) or source


class PoolFilter:
    """Decides which crystals are screened and records, per rule, how many crystals it was
    applied to, how many lacked its metadata and which it removed.

    Args:
        thresholds: the rule thresholds
        exclude: the training set; ``None`` switches the rule off
        training_elements: elements in every model's training data (``None``: unknown)

    ``report`` holds ``{"rules": {name: {"description", "applied", "no_metadata", "removed"
    (names), and for the training set "matched" ({name: how it matched})}}, "invalid":
    {name: problem} (see :meth:`reject`), "untrained_elements": {name: [elements]}}``.
    """

    def __init__(
        self,
        thresholds: Thresholds,
        exclude: Optional[StructureIndex] = None,
        training_elements: Optional[Iterable[str]] = None,
    ):
        self.exclude = exclude
        self.training_elements = training_elements
        t = thresholds
        self.rules = {
            "energy_above_hull": (
                t.max_e_above_hull,
                f"energy above hull < {t.max_e_above_hull} eV/atom",
            ),
            "band_gap": (t.min_band_gap, f"band gap > {t.min_band_gap} eV"),
            "n_sites": (t.max_sites, f"at most {t.max_sites} sites"),
            "noble_gas_hydrogen": (True, "not only noble gases and/or hydrogen"),
            "training_set": (exclude, "not in the training set (--exclude)"),
        }
        self.report = {
            "rules": {
                name: {"description": text, "applied": 0, "no_metadata": 0, "removed": []}
                for name, (threshold, text) in self.rules.items()
                if threshold is not None
            },
            "invalid": {},
            "untrained_elements": {},
        }

    def reject(self, atoms: Optional[ase.Atoms], source: str, problem: str) -> None:
        """Record a structure that cannot be screened (``atoms`` ``None`` when it could not even
        be converted) with its problem."""
        self.report["invalid"][source if atoms is None else label(atoms, source)] = problem

    def _passes(self, name: str, atoms: ase.Atoms) -> Optional[bool]:
        """``True``/``False`` for pass/fail, ``None`` when the crystal lacks the metadata."""
        threshold = self.rules[name][0]
        if name in ("energy_above_hull", "band_gap"):
            value = atoms.info.get(name)
            if value is None:
                return None
            return value < threshold if name == "energy_above_hull" else value > threshold
        if name == "n_sites":
            return len(atoms) <= threshold
        return not set(atoms.get_chemical_symbols()) <= NOBLE_GASES_AND_HYDROGEN

    def __call__(self, atoms: ase.Atoms, source: str) -> bool:
        """Whether to screen ``atoms`` (read from ``source``)."""
        name_of = label(atoms, source)
        rules = self.report["rules"]
        for name, rule in rules.items():
            if name == "training_set":
                break
            passed = self._passes(name, atoms)
            if passed is None:
                rule["no_metadata"] += 1
                continue
            rule["applied"] += 1
            if not passed:
                rule["removed"].append(name_of)
                return False
        if "training_set" in rules:
            rule = rules["training_set"]
            rule["applied"] += 1
            how, matched = self.exclude.match(atoms)
            if how is not None:
                rule["removed"].append(name_of)
                rule.setdefault("matched", {})[name_of] = (
                    "same id" if how == "id" else f"structure of {matched or 'an unnamed crystal'}"
                )
                return False
        if self.training_elements is not None:
            unseen = elements_not_in(atoms, self.training_elements)
            if unseen:
                self.report["untrained_elements"][name_of] = unseen
        return True


def merge_reports(reports: List[Dict]) -> Dict:
    """One filter report from those of several shards (counts summed, lists joined)."""
    merged = {"rules": {}, "invalid": {}, "untrained_elements": {}}
    for report in reports:
        for name, rule in report["rules"].items():
            into = merged["rules"].setdefault(
                name,
                {"description": rule["description"], "applied": 0, "no_metadata": 0, "removed": []},
            )
            into["applied"] += rule["applied"]
            into["no_metadata"] += rule["no_metadata"]
            into["removed"] += rule["removed"]
            if "matched" in rule:
                into.setdefault("matched", {}).update(rule["matched"])
        merged["invalid"].update(report["invalid"])
        merged["untrained_elements"].update(report["untrained_elements"])
    return merged
