"""Synthetic card transactions: the embedded default data of the demo and tests.

Every value is computed in Spark from ``spark.range`` with column expressions:
uniforms come from ``xxhash64(seed, stream, id)``, normals from Box-Muller,
categorical draws from cumulative-probability thresholds. A row therefore
depends only on ``(seed, id)``: the same seed gives the same table however the
range is partitioned, and no data passes through the driver.

See :func:`generate_transactions` for the segments and the kinds of fraud.
"""

from __future__ import annotations

import datetime as _dt
import math
from typing import Sequence

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from segae_spark.errors import ConfigError

# ---------------------------------------------------------------------------
# The latent segments. Index = segment id; none of it is an output column.
# ---------------------------------------------------------------------------

SEGMENTS = ("student", "retiree", "business_traveller", "family", "online_shopper")
SEGMENT_WEIGHTS = (0.22, 0.16, 0.12, 0.28, 0.22)

CHANNELS = ("online", "in_store", "contactless", "atm")
CHANNEL_P = (
    (0.45, 0.05, 0.48, 0.02),  # student
    (0.02, 0.75, 0.05, 0.18),  # retiree
    (0.15, 0.25, 0.58, 0.02),  # business traveller
    (0.05, 0.60, 0.33, 0.02),  # family
    (0.93, 0.03, 0.04, 0.00),  # online shopper
)

CATEGORIES = (
    "grocery", "fuel", "restaurant", "electronics", "clothing",
    "entertainment", "pharmacy", "travel", "airline", "hotel",
)  # fmt: skip
CATEGORY_P = (
    (0.10, 0.02, 0.32, 0.06, 0.12, 0.33, 0.03, 0.01, 0.005, 0.005),  # student
    (0.45, 0.06, 0.10, 0.005, 0.04, 0.02, 0.32, 0.003, 0.001, 0.001),  # retiree
    (0.02, 0.04, 0.18, 0.03, 0.01, 0.01, 0.01, 0.15, 0.25, 0.30),  # business traveller
    (0.50, 0.28, 0.05, 0.015, 0.08, 0.03, 0.04, 0.003, 0.001, 0.001),  # family
    (0.04, 0.00, 0.01, 0.40, 0.38, 0.12, 0.02, 0.02, 0.005, 0.005),  # online shopper
)

CARD_TYPES = ("debit", "credit", "premium", "business")
CARD_P = (
    (0.85, 0.14, 0.01, 0.00),  # student
    (0.30, 0.62, 0.08, 0.00),  # retiree
    (0.00, 0.10, 0.25, 0.65),  # business traveller
    (0.60, 0.35, 0.05, 0.00),  # family
    (0.15, 0.65, 0.20, 0.00),  # online shopper
)

HOME_COUNTRY = "US"
FOREIGN_COUNTRIES = ("CA", "MX", "GB", "DE", "FR", "JP", "BR")
FOREIGN_P = (0.22, 0.18, 0.18, 0.14, 0.12, 0.10, 0.06)
# Share of a segment's transactions made abroad (or with a foreign merchant).
FOREIGN_SHARE = (0.02, 0.005, 0.65, 0.02, 0.08)

# Log-normal amount: median and sigma of log(amount).
AMOUNT_MEDIAN = (12.0, 55.0, 380.0, 95.0, 32.0)
AMOUNT_SIGMA = (0.50, 0.40, 0.50, 0.40, 0.55)
# Hour of day: normal around a peak, wrapped onto 0..23.
HOUR_MEAN = (20.5, 10.5, 13.0, 17.5, 22.0)
HOUR_SD = (2.0, 1.8, 3.5, 2.0, 2.2)
# Domestic distance from home (km): log-normal median and sigma.
DISTANCE_MEDIAN = (3.0, 1.5, 300.0, 10.0, 5.0)
DISTANCE_SIGMA = (0.6, 0.5, 0.8, 0.5, 0.7)
FOREIGN_DISTANCE_MEDIAN = 1800.0
FOREIGN_DISTANCE_SIGMA = 0.5
# Transactions on the card in the last 24h: floor of an exponential.
TXN_COUNT_MEAN = (3.0, 1.0, 4.0, 2.0, 6.0)
# Account age in days: log-normal median and sigma.
ACCOUNT_AGE_MEDIAN = (250.0, 8000.0, 3500.0, 2200.0, 800.0)
ACCOUNT_AGE_SIGMA = (0.45, 0.25, 0.35, 0.35, 0.40)

NULL_RATES = {
    "distance_from_home": (0.02, "null_distance"),
    "country": (0.01, "null_country"),
    "account_age_days": (0.01, "null_age"),
}

# Frauds: this share are global outliers, the rest contextual (segment-relative).
GLOBAL_OUTLIER_SHARE = 0.10
# A contextual fraud redraws two random behaviour groups, and each other group
# with probability SWAP_P, as another segment would draw them: usually the
# segment most unlike the row's for that group (CONTRAST), else a random one.
BEHAVIOUR_GROUPS = ("amount", "hour", "channel", "category", "geo", "count")
SWAP_P = 0.5
CONTRAST_P = 0.8
#           student retiree business family online
CONTRAST = {
    "amount": (2, 2, 0, 2, 2),  # small spenders get a traveller's amount, travellers a student's
    "hour": (1, 4, 4, 1, 1),  # evening people shop at 10:30, day people at 22:00
    "channel": (1, 4, 4, 4, 1),  # online people go to a shop / ATM, shop people go online
    "category": (2, 4, 3, 2, 1),  # travel for students, electronics for retirees, ...
    "geo": (2, 2, 1, 2, 2),  # domestic people abroad, travellers 2 km from home
    "count": (4, 4, 4, 4, 1),
}
# Share of redrawn hours that are night hours (0-5) instead of a segment's hours.
NIGHT_P = 0.5

SCHEMA = (
    ("transaction_id", "string"),
    ("event_date", "date"),
    ("merchant_category", "string"),
    ("channel", "string"),
    ("country", "string"),
    ("card_type", "string"),
    ("amount", "double"),
    ("hour", "int"),
    ("distance_from_home", "double"),
    ("txn_count_24h", "int"),
    ("account_age_days", "int"),
    ("is_fraud", "int"),
)
COLUMNS = tuple(name for name, _ in SCHEMA)

# One hash stream per random draw, so no two draws share a uniform.
_STREAMS = {
    name: k
    for k, name in enumerate(
        [
            "segment", "fraud", "fraud_kind", "date",
            "amount_u1", "amount_u2", "hour_u1", "hour_u2",
            "channel", "category", "foreign", "country", "dist_u1", "dist_u2",
            "count", "card", "age_u1", "age_u2",
            "null_distance", "null_country", "null_age",
            *[f"swap_{g}" for g in BEHAVIOUR_GROUPS],
            *[f"donor_{g}" for g in BEHAVIOUR_GROUPS],
            *[f"contrast_{g}" for g in BEHAVIOUR_GROUPS],
            "forced_1", "forced_2", "night", "night_hour",
            "outlier_amount", "outlier_count", "outlier_distance",
            "outlier_amount_v", "outlier_count_v", "outlier_distance_v",
        ]
    )
}  # fmt: skip

_TWO_53 = 2**53


def _uniform(seed: int, stream: str) -> Column:
    """A uniform in the open interval (0, 1), fixed by (seed, stream, id)."""
    h = F.pmod(F.xxhash64(F.lit(seed), F.lit(_STREAMS[stream]), F.col("id")), F.lit(_TWO_53))
    return (h.cast("double") + F.lit(0.5)) / F.lit(float(_TWO_53))


def _normal(seed: int, stream_1: str, stream_2: str) -> Column:
    """A standard normal by Box-Muller from two independent uniforms."""
    u1, u2 = _uniform(seed, stream_1), _uniform(seed, stream_2)
    return F.sqrt(F.lit(-2.0) * F.log(u1)) * F.cos(F.lit(2.0 * math.pi) * u2)


def _choice(u: Column, values: Sequence, probs: Sequence[float]) -> Column:
    """Draw from ``values`` with ``probs`` by cumulative thresholds on ``u``."""
    expr = None
    cum = 0.0
    for value, p in zip(values[:-1], probs[:-1]):
        cum += p
        if p <= 0.0:
            continue
        expr = F.when(u < F.lit(cum), F.lit(value)) if expr is None else expr.when(u < F.lit(cum), F.lit(value))
    last = F.lit(values[-1])
    return last if expr is None else expr.otherwise(last)


def _per_segment(seg: Column, values: Sequence) -> Column:
    """The value for the row's (effective) segment: a CASE over the segment ids."""
    expr = F.when(seg == F.lit(0), F.lit(values[0]))
    for s, value in enumerate(values[1:], start=1):
        expr = expr.when(seg == F.lit(s), F.lit(value))
    return expr


def _choice_per_segment(seg: Column, u: Column, values: Sequence, table: Sequence[Sequence[float]]) -> Column:
    expr = F.when(seg == F.lit(0), _choice(u, values, table[0]))
    for s, probs in enumerate(table[1:], start=1):
        expr = expr.when(seg == F.lit(s), _choice(u, values, probs))
    return expr


def _validate(rows, seed, fraud_rate, start_date, days, num_partitions) -> _dt.date:
    def is_int(x) -> bool:
        return isinstance(x, int) and not isinstance(x, bool)

    if not is_int(rows) or rows < 1:
        raise ConfigError(f"rows must be an integer >= 1, got {rows!r}")
    if not is_int(seed) or not -(2**63) <= seed < 2**63:
        raise ConfigError(f"seed must be a 64-bit integer, got {seed!r}")
    if isinstance(fraud_rate, bool) or not isinstance(fraud_rate, (int, float)) or not 0.0 <= fraud_rate < 0.5:
        raise ConfigError(f"fraud_rate must be a number with 0 <= fraud_rate < 0.5, got {fraud_rate!r}")
    if not is_int(days) or days < 1:
        raise ConfigError(f"days must be an integer >= 1, got {days!r}")
    if num_partitions is not None and (not is_int(num_partitions) or num_partitions < 1):
        raise ConfigError(f"num_partitions must be None or an integer >= 1, got {num_partitions!r}")
    try:
        start = _dt.date.fromisoformat(start_date) if isinstance(start_date, str) else None
    except ValueError:
        start = None
    if start is None:
        raise ConfigError(f"start_date must be an ISO date 'YYYY-MM-DD', got {start_date!r}")
    try:
        start + _dt.timedelta(days=days - 1)
    except OverflowError:
        raise ConfigError(f"days={days} runs past the last representable date from start_date={start_date}") from None
    return start


def generate_transactions(
    spark: SparkSession,
    rows: int,
    seed: int = 42,
    fraud_rate: float = 0.01,
    start_date: str = "2024-01-01",
    days: int = 90,
    num_partitions: int | None = None,
) -> DataFrame:
    """A deterministic table of ``rows`` synthetic card transactions with fraud labels.

    Each row belongs to one of five latent customer segments. The segment is
    not a column, but it shapes every column, so "normal" differs by segment:

    ===================  ======  ===========================================================
    segment              weight  behaviour (medians)
    ===================  ======  ===========================================================
    students             22%     small amounts (~12), evenings (~20:30), online and
                                 contactless, restaurants and entertainment, debit cards,
                                 young accounts (~250 days), ~3 km from home, domestic
    retirees             16%     moderate amounts (~55), mornings (~10:30), in-store and
                                 ATM, groceries and pharmacy, credit or debit cards, very
                                 old accounts (~8000 days), ~1 card use a day, ~1.5 km
                                 from home, domestic
    business travellers  12%     large amounts (~380), airline / hotel / travel /
                                 restaurants, contactless, business and premium cards,
                                 65% abroad (~1800 km from home) and ~300 km from home
                                 even when domestic, hours spread over the day
    families             28%     medium amounts (~95), groceries and fuel, in-store and
                                 contactless, late afternoon (~17:30), debit or credit
                                 cards, accounts of ~2200 days, ~10 km from home, domestic
    online shoppers      22%     online (93%), electronics and clothing, late evening
                                 (~22:00), credit and premium cards, most card uses per
                                 day (~6), 8% foreign merchants, accounts of ~800 days
    ===================  ======  ===========================================================

    Frauds (``is_fraud = 1``) are a ``fraud_rate`` share of the rows, of two kinds:

    * contextual frauds (90%): the customer stays the same (segment, card type,
      account age) but some of the six behaviour groups -- amount, hour,
      channel, merchant category, geography (country and distance together),
      card uses in 24h -- are drawn as another segment would draw them: two
      random groups always, each other group with probability 1/2. The donor
      is, 4 times in 5, the segment most unlike the row's for that group (see
      ``CONTRAST``), else a random other one; half of the redrawn hours are
      night hours (0-5). Every value is plausible in the table as a whole; the
      combination is unusual for the row's segment: a retiree's 3 am online
      electronics purchase abroad at a business traveller's amount, a student
      spending a premium-card amount, a business traveller buying groceries
      2 km from home. A global detector misses many of them; a per-segment
      model sees most.
    * global outliers (10%): a segment-typical row with a huge amount
      (2,000-30,000), a burst of card uses (25-80 in 24h) or a distance of
      8,000-16,000 km -- each with probability 0.7, and at least one.

    Missing values, independent of fraud: ~2% of ``distance_from_home``, ~1% of
    ``country`` and ~1% of ``account_age_days`` are null.

    Columns: ``transaction_id`` (string, "T" + 12-digit row id, unique),
    ``event_date`` (date in ``start_date .. start_date + days - 1``),
    ``merchant_category`` (10 values), ``channel`` (online / in_store /
    contactless / atm), ``country`` (ISO code, "US" is home), ``card_type``
    (debit / credit / premium / business), ``amount`` (double > 0, cents),
    ``hour`` (int 0-23), ``distance_from_home`` (double km >= 0),
    ``txn_count_24h`` (int >= 0), ``account_age_days`` (int >= 0), ``is_fraud``
    (int 0/1).

    Every value is a function of ``(seed, row id)`` only: the same seed gives
    the same table for any ``num_partitions`` (``None``: Spark's default
    parallelism), and a different seed gives a different table.

    Raises:
        ConfigError: ``rows < 1``, ``fraud_rate`` outside ``[0, 0.5)``,
            ``days < 1``, an invalid ``start_date`` or ``num_partitions``.
    """
    df = _generate(spark, rows, seed, fraud_rate, start_date, days, num_partitions)
    return df.select(*[F.col(name).cast(kind).alias(name) for name, kind in SCHEMA])


def _generate(
    spark: SparkSession,
    rows: int,
    seed: int = 42,
    fraud_rate: float = 0.01,
    start_date: str = "2024-01-01",
    days: int = 90,
    num_partitions: int | None = None,
) -> DataFrame:
    """The table with the diagnostic columns ``id``, ``segment`` and ``fraud_kind``.

    For tests and quality checks of detectors against the hidden truth; the
    public function drops them.
    """
    start = _validate(rows, seed, fraud_rate, start_date, days, num_partitions)
    u = lambda stream: _uniform(seed, stream)  # noqa: E731
    z = lambda s1, s2: _normal(seed, s1, s2)  # noqa: E731

    base = spark.range(0, rows, 1, numPartitions=num_partitions)

    # Stage 1: who the customer is, and whether (and how) the row is a fraud.
    is_fraud = (u("fraud") < F.lit(float(fraud_rate))).cast("int")
    fraud_kind = (
        F.when(is_fraud == 0, F.lit("none"))
        .when(u("fraud_kind") < F.lit(GLOBAL_OUTLIER_SHARE), F.lit("global"))
        .otherwise(F.lit("contextual"))
    )
    stage1 = base.select(
        "id",
        _choice(u("segment"), list(range(len(SEGMENTS))), SEGMENT_WEIGHTS).alias("segment"),
        is_fraud.alias("is_fraud"),
        fraud_kind.alias("fraud_kind"),
    )

    # Stage 2: the segment each behaviour group is drawn from (see CONTRAST).
    seg = F.col("segment")
    contextual = F.col("fraud_kind") == F.lit("contextual")
    n_groups, n_seg = len(BEHAVIOUR_GROUPS), len(SEGMENTS)
    forced_1 = F.floor(u("forced_1") * F.lit(n_groups)).cast("int")
    forced_2 = F.pmod(forced_1 + F.lit(1) + F.floor(u("forced_2") * F.lit(n_groups - 1)).cast("int"), F.lit(n_groups))
    group_cols = []
    for i, g in enumerate(BEHAVIOUR_GROUPS):
        swapped = (u(f"swap_{g}") < F.lit(SWAP_P)) | (forced_1 == F.lit(i)) | (forced_2 == F.lit(i))
        random_other = F.pmod(seg + F.lit(1) + F.floor(u(f"donor_{g}") * F.lit(n_seg - 1)).cast("int"), F.lit(n_seg))
        donor = F.when(u(f"contrast_{g}") < F.lit(CONTRAST_P), _per_segment(seg, CONTRAST[g])).otherwise(random_other)
        group_cols.append(F.when(contextual & swapped, donor).otherwise(seg).alias(f"seg_{g}"))
    night = contextual & (F.col("seg_hour") != seg) & (u("night") < F.lit(NIGHT_P))
    group_cols.append(night.alias("night"))
    stage2 = stage1.select("*", *group_cols)

    # Stage 3: the transaction itself, each group from its effective segment.
    s_amount, s_hour, s_channel = F.col("seg_amount"), F.col("seg_hour"), F.col("seg_channel")
    s_category, s_geo, s_count = F.col("seg_category"), F.col("seg_geo"), F.col("seg_count")

    log_amount = F.log(_per_segment(s_amount, AMOUNT_MEDIAN)) + _per_segment(s_amount, AMOUNT_SIGMA) * z(
        "amount_u1", "amount_u2"
    )
    hour = F.pmod(
        F.round(_per_segment(s_hour, HOUR_MEAN) + _per_segment(s_hour, HOUR_SD) * z("hour_u1", "hour_u2")).cast("int"),
        F.lit(24),
    )
    hour = F.when(F.col("night"), F.floor(u("night_hour") * F.lit(6)).cast("int")).otherwise(hour)
    foreign = u("foreign") < _per_segment(s_geo, FOREIGN_SHARE)
    country = F.when(foreign, _choice(u("country"), FOREIGN_COUNTRIES, FOREIGN_P)).otherwise(F.lit(HOME_COUNTRY))
    dist_z = z("dist_u1", "dist_u2")
    distance = F.when(
        foreign, F.exp(F.lit(math.log(FOREIGN_DISTANCE_MEDIAN)) + F.lit(FOREIGN_DISTANCE_SIGMA) * dist_z)
    ).otherwise(F.exp(F.log(_per_segment(s_geo, DISTANCE_MEDIAN)) + _per_segment(s_geo, DISTANCE_SIGMA) * dist_z))
    count = F.floor(-F.log(u("count")) * _per_segment(s_count, TXN_COUNT_MEAN)).cast("int")
    log_age = F.log(_per_segment(seg, ACCOUNT_AGE_MEDIAN)) + _per_segment(seg, ACCOUNT_AGE_SIGMA) * z("age_u1", "age_u2")
    age = F.floor(F.exp(log_age)).cast("int")

    # Global outliers: huge amount / burst of uses / very far, each p=0.7, amount forced if none.
    is_global = F.col("fraud_kind") == F.lit("global")
    o_count = u("outlier_count") < F.lit(0.7)
    o_distance = u("outlier_distance") < F.lit(0.7)
    o_amount = (u("outlier_amount") < F.lit(0.7)) | ~(o_count | o_distance)
    huge_log_amount = F.lit(math.log(2000.0)) + u("outlier_amount_v") * F.lit(math.log(15.0))  # 2,000-30,000
    log_amount = F.when(is_global & o_amount, huge_log_amount).otherwise(log_amount)
    count = F.when(is_global & o_count, F.lit(25) + F.floor(u("outlier_count_v") * F.lit(56)).cast("int")).otherwise(
        count
    )
    distance = F.when(is_global & o_distance, F.lit(8000.0) + u("outlier_distance_v") * F.lit(8000.0)).otherwise(
        distance
    )

    def nullify(value: Column, column: str) -> Column:
        rate, stream = NULL_RATES[column]
        return F.when(u(stream) < F.lit(rate), F.lit(None)).otherwise(value)

    out = stage2.select(
        "id",
        "segment",
        "fraud_kind",
        F.format_string("T%012d", F.col("id")).alias("transaction_id"),
        F.date_add(F.lit(start.isoformat()).cast("date"), F.floor(u("date") * F.lit(days)).cast("int")).alias(
            "event_date"
        ),
        _choice_per_segment(s_category, u("category"), CATEGORIES, CATEGORY_P).alias("merchant_category"),
        _choice_per_segment(s_channel, u("channel"), CHANNELS, CHANNEL_P).alias("channel"),
        nullify(country, "country").alias("country"),
        _choice_per_segment(seg, u("card"), CARD_TYPES, CARD_P).alias("card_type"),
        F.greatest(F.round(F.exp(log_amount), 2), F.lit(0.01)).alias("amount"),
        hour.cast("int").alias("hour"),
        nullify(F.round(distance, 1), "distance_from_home").cast("double").alias("distance_from_home"),
        count.cast("int").alias("txn_count_24h"),
        nullify(age, "account_age_days").cast("int").alias("account_age_days"),
        F.col("is_fraud").cast("int").alias("is_fraud"),
    )
    return out
