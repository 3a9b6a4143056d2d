"""The one monthly partitions definition: every partitioned asset, job and sensor imports it."""

from __future__ import annotations

import dagster as dg
import pandas as pd

from bank_marketing.data.months import FIRST_MONTH, LAST_MONTH

# end_date is exclusive: the last partition is the month before it.
monthly_partitions = dg.MonthlyPartitionsDefinition(
    start_date=FIRST_MONTH.to_pydatetime(),
    end_date=(LAST_MONTH + pd.offsets.MonthBegin(1)).to_pydatetime(),
)
