"""The group report of a cohort stays readable (bidsreg.group.report): QC lists first and
capped, regions sorted, no dot per subject."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd

from bidsreg import exit_codes
from bidsreg.cli.run import main
from bidsreg.group.report import MAX_LISTED
from bidsreg.group.requests import write_requests

SUBJECTS = [f"{index:02d}" for index in range(2, 62)]  # 60 subjects
REGIONS = 12
WORST = "07"


def cohort(out):
    """Overlaps of original, cnn and antssyn for every subject (region ``r`` has Dice about
    0.3 + 0.04 r; sub-07 is poor), T1w images not known to be skull-stripped."""
    rng = np.random.default_rng(0)
    for subject in SUBJECTS:
        anat = out / f"sub-{subject}" / "anat"
        anat.mkdir(parents=True)
        for method, level in (("original", -0.2), ("cnn", 0.0), ("antssyn", 0.1)):
            dice = 0.3 + 0.04 * np.arange(REGIONS) + level + rng.normal(0, 0.01, REGIONS) - 0.2 * (subject == WORST)
            pd.DataFrame({"label": np.arange(1, REGIONS + 1), "name": [f"region{r}" for r in range(REGIONS)],
                          "target_overlap": dice, "dice": dice, "jaccard": dice / (2 - dice), "hd95": 3.0}).to_csv(
                anat / f"sub-{subject}_seg-DK_desc-{method}_overlap.tsv", sep="\t", index=False)
            (anat / f"sub-{subject}_seg-DK_desc-{method}_overlap.json").write_text(json.dumps({"Space": "sub01"}))
    write_requests(out, [{"subject": s} for s in SUBJECTS], ["cnn", "antssyn"], [True] * len(SUBJECTS))
    return out


def test_a_cohort_report_lists_the_worst_first_and_caps_its_lists(tmp_path):
    out = cohort(tmp_path / "out")
    assert main([str(tmp_path / "bids"), str(out), "group"]) == exit_codes.OK
    report = (out / "group" / "report.html").read_text()
    worst = report[report.index("look at these first"):]
    first_row = re.search(r"<tbody>\s*<tr>(.*?)</tr>", worst, re.S).group(1)
    assert f"<td>{WORST}</td>" in first_row and "<td>cnn</td>" in first_row  # its lowest result on top
    qc = pd.read_csv(out / "group" / "qc.tsv", sep="\t", dtype={"subject": str})
    assert len(qc) == 3 * len(SUBJECTS)  # the TSV holds every row, the report the first MAX_LISTED
    flagged = int((qc["qc"] != "ok").sum())  # every registration: no T1w known to be skull-stripped
    assert flagged > 2 * len(SUBJECTS) and f"... and {flagged - MAX_LISTED} more flagged results" in report
    assert f"and {len(SUBJECTS) - MAX_LISTED} more" in report and "sub-61" not in report.split("QC flags")[0]
    regions = report[report.index("the hardest first"):]
    assert regions.index("region0") < regions.index("region5") < regions.index("region11")
