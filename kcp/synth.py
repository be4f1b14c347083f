"""Synthetic ZTF-like alerts for demos, tests and benchmarks.

The alerts follow ``schemas/ztf/alert.avsc`` (a kcp-authored subset of the public ZTF alert
schema) and look like a night of real ZTF output: plausible photometry, a 30-day light-curve
history with upper limits, forced photometry, and three cutouts that are genuine gzip-compressed
63x63 float32 FITS images of about the size real ones have.

Everything is deterministic for a seed and needs only the standard library and fastavro.

    python -m kcp.synth 20000 night.avro --seed 1 --night 20180725
"""

from __future__ import annotations

import argparse
import array
import datetime
import functools
import json
import math
import os
import random
import string
import sys
import time
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import fastavro

DEFAULT_NIGHT = "20180725"
SCHEMA_VERSION = "4.02-kcp"
PUBLISHER = "kcp.synth (synthetic, not real ZTF data)"
STAMP_SIDE = 63

_SCHEMA_RELATIVE_PATH = Path("ztf") / "alert.avsc"

# Alerts are laid out like a real night: consecutive indices share an exposure, one exposure
# every 30 s plus overheads, starting at evening twilight over Palomar (about 03:20 UTC).
_ALERTS_PER_EXPOSURE = 200
_EXPOSURE_CADENCE_DAYS = 39.0 / 86400.0
_NIGHT_START_DAY_FRACTION = 0.14
_HISTORY_DAYS = 30.0
# Night IDs count days from 2017-01-01 (real alerts of 2018-04-18 carry nid 472).
_NIGHT_ID_EPOCH_JD = 2457754.5
_JD_OF_ORDINAL_ZERO = 1721424.5
_J2000_JD = 2451545.0
_QUADRANT_WIDTH, _QUADRANT_HEIGHT = 3072, 3080
_ARCSEC_PER_PIXEL = 1.01

# Alerts come from objects brighter than about the survey's typical depth.
_FAINTEST_ALERT_MAG = 21.0
_FILTER_LETTERS = {1: "g", 2: "r", 3: "i"}
# Typical colours relative to r, so a light curve mixing filters is not a random scatter.
_FILTER_COLOUR = {1: 0.3, 2: 0.0, 3: -0.15}
_RB_VERSION = "t17_f5_c3"
_DRB_VERSION = "d6_m7"
_PROGRAM_PI = "Synthetic"
_PUBLIC_PROGRAM_ID = 1

_FITS_BLOCK = 2880
_FITS_CARD = 80
_STAMP_PIXELS = STAMP_SIDE * STAMP_SIDE
_STAMP_PIXEL_BYTES = 4 * _STAMP_PIXELS
_STAMP_PIXEL_BITS = 8 * _STAMP_PIXEL_BYTES
_STAMP_DATA_PADDING = b"\0" * (-_STAMP_PIXEL_BYTES % _FITS_BLOCK)
# Pool images are reused, so each cutout gets fresh random bits in the lowest mantissa byte of
# every pixel (a relative change below 3e-5).  Two stamps drawn from the same pool image then
# share runs of 4 or more bytes only by chance, so Kafka codecs cannot exploit cross-message
# repeats that real alerts never contain.
_LOW_MANTISSA_BYTE_MASK = int.from_bytes(b"\0\0\0\xff" * _STAMP_PIXELS, "big")
_SIGN_BIT_MASK = int.from_bytes(b"\x80\0\0\0" * _STAMP_PIXELS, "big")
_STAMP_POOL_SIZE = 32
_STAMP_POOL_SEED = 63
_STAMP_KINDS = ("science", "template", "difference")


def load_ztf_like_schema() -> dict[str, Any]:
    """Return the ZTF-like alert schema as parsed JSON (not yet fastavro-parsed).

    Installed, the schemas ship inside the package (``kcp/schemas``); in a checkout they sit
    next to it (``<repo>/schemas``).
    """
    package_dir = Path(__file__).resolve().parent
    candidates = [
        package_dir / "schemas" / _SCHEMA_RELATIVE_PATH,
        package_dir.parent / "schemas" / _SCHEMA_RELATIVE_PATH,
    ]
    for path in candidates:
        if path.is_file():
            with path.open(encoding="utf-8") as schema_file:
                return json.load(schema_file)
    searched = ", ".join(str(path) for path in candidates)
    raise FileNotFoundError(f"ZTF-like alert schema not found; looked in {searched}")


def make_alert(rng: random.Random, night: str = DEFAULT_NIGHT, index: int = 0) -> dict[str, Any]:
    """Return one alert datum for the ZTF-like schema.

    ``index`` is the alert's position in the night: it sets the exposure time and makes
    ``candid`` unique within the night.  All other values come from ``rng``.
    """
    exposure_jd = (
        _night_start_jd(night)
        + _NIGHT_START_DAY_FRACTION
        + (index // _ALERTS_PER_EXPOSURE) * _EXPOSURE_CADENCE_DAYS
    )
    target = _Target(rng, night)
    candidate = _candidate(rng, target, exposure_jd, table_id=index % _ALERTS_PER_EXPOSURE)
    prv_candidates = _prv_candidates(rng, target, exposure_jd)

    recent_detections = [prv["jd"] for prv in prv_candidates if prv["candid"] is not None]
    detections_before_history = rng.randrange(40)
    if detections_before_history:
        candidate["jdstarthist"] = exposure_jd - rng.uniform(_HISTORY_DAYS, 600.0)
    else:
        candidate["jdstarthist"] = recent_detections[0] if recent_detections else exposure_jd
    candidate["jdendhist"] = exposure_jd
    candidate["ndethist"] = detections_before_history + len(recent_detections) + 1
    candidate["ncovhist"] = candidate["ndethist"] + rng.randrange(len(prv_candidates), 400)
    return {
        "schemavsn": SCHEMA_VERSION,
        "publisher": PUBLISHER,
        "objectId": target.object_id,
        "candid": candidate["candid"],
        "candidate": candidate,
        "prv_candidates": prv_candidates,
        "fp_hists": _fp_hists(rng, target, exposure_jd),
        **_cutouts(rng, candidate),
    }


def iter_alerts(n: int, seed: int = 0, night: str = DEFAULT_NIGHT) -> Iterator[dict[str, Any]]:
    """Yield ``n`` alerts of one night, one at a time; the same seed yields the same alerts."""
    rng = random.Random(seed)
    for index in range(n):
        yield make_alert(rng, night, index)


def write_night(
    path_or_fileobj: str | os.PathLike[str] | BinaryIO,
    n: int,
    seed: int = 0,
    night: str = DEFAULT_NIGHT,
) -> int:
    """Write ``n`` alerts as an uncompressed Avro object container file; return ``n``."""
    schema = fastavro.parse_schema(load_ztf_like_schema())
    alerts = iter_alerts(n, seed=seed, night=night)
    if isinstance(path_or_fileobj, (str, os.PathLike)):
        with open(path_or_fileobj, "wb") as out:
            fastavro.writer(out, schema, alerts, codec="null")
    else:
        fastavro.writer(path_or_fileobj, schema, alerts, codec="null")
    return n


def datum_from_schema(schema: Any, rng: random.Random, items: int = 3) -> Any:
    """A random datum of any Avro schema parsed by fastavro (Rubin's, for one): each union
    takes its last branch (the value, not null, in Rubin's ``["null", X]``), each array and
    map ``items`` entries, each bytes value an uncompressed FITS image as Rubin's cutouts are.
    """
    named: dict[str, Any] = {}

    def make(node: Any) -> Any:
        if isinstance(node, str):
            if node in named:
                return make(named[node])
            return _random_primitive(node, rng)
        if isinstance(node, list):
            return make(node[-1])
        kind = node["type"]
        logical = node.get("logicalType")
        if logical in _TIMESTAMP_UNITS:
            seconds = rng.uniform(1.7e9, 1.8e9)
            unit = _TIMESTAMP_UNITS[logical]
            return datetime.datetime.fromtimestamp(round(seconds * unit) / unit,
                                                   datetime.UTC)
        if kind in ("record", "error", "enum", "fixed"):
            named[node["name"]] = node
        if kind in ("record", "error"):
            return {f["name"]: make(f["type"]) for f in node["fields"]}
        if kind == "array":
            return [make(node["items"]) for _ in range(items)]
        if kind == "map":
            return {f"key{i}": make(node["values"]) for i in range(items)}
        if kind == "enum":
            return rng.choice(node["symbols"])
        if kind == "fixed":
            return rng.randbytes(node["size"])
        return make(kind)

    return make(schema)


_TIMESTAMP_UNITS = {"timestamp-millis": 1000, "timestamp-micros": 1000000}


def _random_primitive(kind: str, rng: random.Random) -> Any:
    if kind == "null":
        return None
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "int":
        return rng.randrange(-(2**31), 2**31)
    if kind == "long":
        return rng.randrange(0, 2**62)
    if kind == "float":  # a value float32 holds exactly, so a round trip compares equal
        return array.array("f", [rng.uniform(-1e4, 1e4)])[0]
    if kind == "double":
        return rng.uniform(-1e4, 1e4)
    if kind == "string":
        return "".join(rng.choices(string.ascii_letters, k=rng.randrange(4, 16)))
    if kind == "bytes":
        return _fits_stamp(rng)
    raise ValueError(f"not an Avro type: {kind!r}")


def _fits_stamp(rng: random.Random) -> bytes:
    """A plain (not gzipped) FITS image of a point source, drawn from the stamp pool."""
    images = _stamp_pool()["difference"]
    pixels = images[rng.randrange(len(images))]
    header = _fits_header([*_STATIC_STAMP_CARDS, _fits_card("CRVAL1", rng.uniform(0, 360)),
                           _fits_card("CRVAL2", rng.uniform(-90, 30))])
    return header + pixels.to_bytes(_STAMP_PIXEL_BYTES, "big") + _STAMP_DATA_PADDING


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m kcp.synth N OUT.avro [--seed S] [--night YYYYMMDD]``."""
    parser = argparse.ArgumentParser(
        prog="python -m kcp.synth",
        description="Write N synthetic ZTF-like alerts to an Avro object container file.",
    )
    parser.add_argument("n", type=_non_negative_int, metavar="N", help="number of alerts")
    parser.add_argument("out", metavar="OUT", help="output .avro file, or - for stdout")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--night",
        type=_night_argument,
        default=DEFAULT_NIGHT,
        help=f"UTC date YYYYMMDD (default: {DEFAULT_NIGHT})",
    )
    args = parser.parse_args(argv)

    started = time.perf_counter()
    destination = sys.stdout.buffer if args.out == "-" else args.out
    write_night(destination, args.n, seed=args.seed, night=args.night)
    elapsed = time.perf_counter() - started
    rate = args.n / elapsed if elapsed > 0 else float("inf")
    print(
        f"kcp.synth: wrote {args.n} alerts to {args.out} in {elapsed:.1f} s ({rate:.0f} alerts/s)",
        file=sys.stderr,
    )
    return 0


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _night_argument(text: str) -> str:
    try:
        _night_start_jd(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected YYYYMMDD, got {text!r}") from error
    return text


@functools.lru_cache(maxsize=64)
def _night_start_jd(night: str) -> float:
    """Julian date of 00:00 UTC on the night's date."""
    date = datetime.datetime.strptime(night, "%Y%m%d").date()
    return date.toordinal() + _JD_OF_ORDINAL_ZERO


def _iso_time(jd: float) -> str:
    moment = datetime.datetime(2000, 1, 1, 12) + datetime.timedelta(days=jd - _J2000_JD)
    return moment.isoformat(timespec="seconds")


def _processing_id(jd: float, rcid: int) -> int:
    """A ZTF-style image processing ID: night ID, then the time of night, then the quadrant."""
    night_id, day_fraction = divmod(jd - _NIGHT_ID_EPOCH_JD, 1.0)
    return (int(night_id) * 10**7 + int(day_fraction * 10**7)) * 100 + rcid


def _night_id(jd: float) -> int:
    return int(jd - _NIGHT_ID_EPOCH_JD)


def _difference_image_name(jd: float, field: int, fid: int, rcid: int) -> str:
    # Formatted by hand: strftime would cost more than the rest of a history entry.
    date = datetime.date.fromordinal(int(jd - _JD_OF_ORDINAL_ZERO))
    time_of_day = int((jd - _JD_OF_ORDINAL_ZERO) % 1.0 * 10**6)
    ccd, quadrant = rcid // 4 + 1, rcid % 4 + 1
    return (
        f"ztf_{date.year:04d}{date.month:02d}{date.day:02d}{time_of_day:06d}_{field:06d}"
        f"_z{_FILTER_LETTERS[fid]}_c{ccd:02d}_o_q{quadrant}_scimrefdiffimg.fits"
    )


def _archived_difference_image_path(jd: float, field: int, fid: int, rcid: int) -> str:
    name = _difference_image_name(jd, field, fid, rcid)
    year, month_day, time_of_day = name[4:8], name[8:12], name[12:18]
    return f"/ztf/archive/sci/{year}/{month_day}/{time_of_day}/{name}.fz"


def _pick_filter(rng: random.Random) -> int:
    draw = rng.random()
    return 2 if draw < 0.5 else 1 if draw < 0.92 else 3


def _offset_position(
    ra: float, dec: float, east_arcsec: float, north_arcsec: float
) -> tuple[float, float]:
    cos_dec = max(math.cos(math.radians(dec)), 1e-3)
    new_dec = min(max(dec + north_arcsec / 3600.0, -90.0), 90.0)
    return (ra + east_arcsec / 3600.0 / cos_dec) % 360.0, new_dec


class _Target:
    """What stays the same from epoch to epoch at one sky position: the object, its
    surroundings in the reference image and catalogs, and a simple light-curve model."""

    def __init__(self, rng: random.Random, night: str) -> None:
        self.object_id = f"ZTF{night[2:4]}" + "".join(rng.choices(string.ascii_lowercase, k=7))
        self.ra = rng.uniform(0.0, 360.0)
        # Uniform over the sphere north of -30 deg, ZTF's reach from Palomar.
        self.dec = math.degrees(math.asin(rng.uniform(-0.5, 1.0)))
        self.field = rng.randint(245, 880)
        self.rcid = rng.randrange(64)
        self.xpos = rng.uniform(5.0, _QUADRANT_WIDTH - 5.0)
        self.ypos = rng.uniform(5.0, _QUADRANT_HEIGHT - 5.0)
        self.fid = _pick_filter(rng)

        # Most candidates sit on or near a catalogued source (a host or a variable star).
        self.distnr = rng.expovariate(1.0 / 1.5)
        self.magnr = rng.uniform(14.0, 21.5)
        self.sigmagnr = 0.01 + 0.2 * 10 ** (0.4 * (self.magnr - 21.5))
        self.chinr = rng.lognormvariate(0.0, 0.6)
        self.sharpnr = rng.gauss(0.0, 0.08)
        angle = rng.uniform(0.0, 2.0 * math.pi)
        offset = self.distnr * _ARCSEC_PER_PIXEL
        self.ranr, self.decnr = _offset_position(
            self.ra, self.dec, offset * math.cos(angle), offset * math.sin(angle)
        )

        self.sgmag1 = self.magnr + rng.uniform(0.0, 0.8)
        self.srmag1 = self.magnr + rng.gauss(0.0, 0.1)
        self.sgscore1 = rng.betavariate(0.5, 0.5)
        self.distpsnr1 = self.distnr * _ARCSEC_PER_PIXEL + abs(rng.gauss(0.0, 0.2))

        if rng.random() < 0.04:
            self.ssdistnr, self.ssmagnr = rng.uniform(0.0, 10.0), rng.uniform(16.0, 21.0)
            self.ssnamenr = str(rng.randint(1000, 600000))
        else:
            self.ssdistnr, self.ssmagnr, self.ssnamenr = -999.0, -999.0, "null"

        # Magnitude now in the alert's filter, and how much fainter it was per day back.
        self.mag_now = _FAINTEST_ALERT_MAG - 0.5 - 7.5 * rng.random() ** 2
        self.fading_per_day_back = rng.uniform(-0.05, 0.15)

    def magnitude(self, fid: int, days_before: float) -> float:
        return (
            self.mag_now
            + _FILTER_COLOUR[fid]
            - _FILTER_COLOUR[self.fid]
            + self.fading_per_day_back * days_before
        )


def _measurement(
    rng: random.Random, target: _Target, true_mag: float, limit: float
) -> dict[str, Any]:
    """Values a detection has in both ``candidate`` and ``prv_candidate``."""
    signal_to_noise = 5.0 * 10 ** (0.4 * (limit - true_mag))
    sigmapsf = math.hypot(1.0857 / signal_to_noise, 0.01)
    magpsf = min(true_mag + rng.gauss(0.0, sigmapsf), limit - 0.01)
    magap = magpsf + rng.gauss(0.0, sigmapsf)
    ra, dec = _offset_position(target.ra, target.dec, rng.gauss(0.0, 0.1), rng.gauss(0.0, 0.1))
    return {
        "xpos": target.xpos + rng.gauss(0.0, 0.1),
        "ypos": target.ypos + rng.gauss(0.0, 0.1),
        "ra": ra,
        "dec": dec,
        "magpsf": magpsf,
        "sigmapsf": sigmapsf,
        "chipsf": rng.lognormvariate(0.3, 0.5),
        "magap": magap,
        "sigmagap": sigmapsf * rng.uniform(0.8, 1.2),
        "distnr": target.distnr,
        "magnr": target.magnr,
        "sigmagnr": target.sigmagnr,
        "fwhm": rng.uniform(1.6, 4.0),
        "elong": rng.uniform(1.0, 1.3),
        "nbad": 0 if rng.random() < 0.95 else rng.randint(1, 4),
        "rb": rng.betavariate(2.0, 0.8),
        "ssdistnr": target.ssdistnr,
        "ssnamenr": target.ssnamenr,
        "ranr": target.ranr,
        "decnr": target.decnr,
        "scorr": signal_to_noise * rng.uniform(0.9, 1.3),
        "magzpsci": rng.gauss(26.2, 0.1),
        "rbversion": _RB_VERSION,
    }


def _candidate(rng: random.Random, target: _Target, jd: float, table_id: int) -> dict[str, Any]:
    true_mag = target.magnitude(target.fid, 0.0)
    # The alert exists because the object was detected, so the image went deep enough.
    limit = max(rng.uniform(19.5, 21.0), true_mag + rng.uniform(0.2, 1.0))
    measured = _measurement(rng, target, true_mag, limit)
    pid = _processing_id(jd, target.rcid)
    magap, magpsf = measured["magap"], min(measured["magpsf"], _FAINTEST_ALERT_MAG)
    aimage = measured["fwhm"] / 2.9 * rng.uniform(1.0, 1.25)
    candidate = {
        "jd": jd,
        "fid": target.fid,
        "pid": pid,
        "diffmaglim": limit,
        "pdiffimfilename": _difference_image_name(jd, target.field, target.fid, target.rcid),
        "programpi": _PROGRAM_PI,
        "programid": _PUBLIC_PROGRAM_ID,
        "candid": pid * 10**6 + table_id,
        "isdiffpos": "t" if rng.random() < 0.85 else "f",
        "tblid": table_id,
        "nid": _night_id(jd),
        "rcid": target.rcid,
        "field": target.field,
        "xpos": measured["xpos"],
        "ypos": measured["ypos"],
        "ra": measured["ra"],
        "dec": measured["dec"],
        "magpsf": magpsf,
        "sigmapsf": measured["sigmapsf"],
        "chipsf": measured["chipsf"],
        "magap": magap,
        "sigmagap": measured["sigmagap"],
        "distnr": target.distnr,
        "magnr": target.magnr,
        "sigmagnr": target.sigmagnr,
        "chinr": target.chinr,
        "sharpnr": target.sharpnr,
        "sky": rng.gauss(0.0, 1.5),
        "magdiff": magap - magpsf,
        "fwhm": measured["fwhm"],
        "classtar": rng.betavariate(0.6, 0.4),
        "mindtoedge": min(
            target.xpos, target.ypos, _QUADRANT_WIDTH - target.xpos, _QUADRANT_HEIGHT - target.ypos
        ),
        "magfromlim": limit - magap,
        "seeratio": rng.uniform(0.8, 1.3),
        "aimage": aimage,
        "bimage": aimage / measured["elong"],
        "elong": measured["elong"],
        "nneg": rng.randint(0, 12),
        "nbad": measured["nbad"],
        "rb": measured["rb"],
        "ssdistnr": target.ssdistnr,
        "ssmagnr": target.ssmagnr,
        "ssnamenr": target.ssnamenr,
        "sumrat": rng.uniform(0.6, 1.0),
        "magapbig": magap + rng.gauss(0.0, 0.05),
        "sigmagapbig": measured["sigmagap"] * 1.2,
        "ranr": target.ranr,
        "decnr": target.decnr,
        "sgmag1": target.sgmag1,
        "srmag1": target.srmag1,
        "sgscore1": target.sgscore1,
        "distpsnr1": target.distpsnr1,
        # The history counts are filled in by make_alert once the history exists.
        "ndethist": 0,
        "ncovhist": 0,
        "jdstarthist": None,
        "jdendhist": None,
        "scorr": measured["scorr"],
        "tooflag": 0,
        "rbversion": _RB_VERSION,
        "magzpsci": measured["magzpsci"],
        "exptime": 30.0,
        "drb": min(1.0, max(0.0, measured["rb"] + rng.gauss(0.0, 0.1))),
        "drbversion": _DRB_VERSION,
    }
    return _round_float_fields(candidate, "candidate")


def _prv_candidates(rng: random.Random, target: _Target, alert_jd: float) -> list[dict[str, Any]]:
    """5 to 60 earlier epochs, oldest first; an epoch where the object would have been below
    the image's limit (or was simply missed) becomes a non-detection with a null candid."""
    days_before = sorted(
        (rng.uniform(0.02, _HISTORY_DAYS) for _ in range(rng.randint(5, 60))), reverse=True
    )
    history = []
    for days in days_before:
        jd = alert_jd - days
        fid = _pick_filter(rng)
        limit = rng.uniform(18.8, 21.2)
        true_mag = target.magnitude(fid, days)
        pid = _processing_id(jd, target.rcid)
        epoch = {
            "jd": jd,
            "fid": fid,
            "pid": pid,
            "diffmaglim": limit,
            "pdiffimfilename": _archived_difference_image_path(jd, target.field, fid, target.rcid),
            "programpi": _PROGRAM_PI,
            "programid": _PUBLIC_PROGRAM_ID,
            "nid": _night_id(jd),
            "rcid": target.rcid,
            "field": target.field,
        }
        if true_mag < limit - 0.2 and rng.random() < 0.9:
            epoch["candid"] = pid * 10**6 + rng.randrange(_ALERTS_PER_EXPOSURE)
            epoch["isdiffpos"] = "t" if rng.random() < 0.85 else "f"
            epoch.update(_measurement(rng, target, true_mag, limit))
        else:
            epoch.update(_NON_DETECTION)
            epoch["magzpsci"] = rng.gauss(26.2, 0.1)
        history.append(_round_float_fields(epoch, "prv_candidate"))
    return history


# What a prv_candidate holds where nothing was detected, besides the image's own values.
_NON_DETECTION: dict[str, Any] = dict.fromkeys(
    [
        "candid",
        "isdiffpos",
        "xpos",
        "ypos",
        "ra",
        "dec",
        "magpsf",
        "sigmapsf",
        "chipsf",
        "magap",
        "sigmagap",
        "distnr",
        "magnr",
        "sigmagnr",
        "fwhm",
        "elong",
        "nbad",
        "rb",
        "ssdistnr",
        "ssnamenr",
        "ranr",
        "decnr",
        "scorr",
    ]
) | {"rbversion": _RB_VERSION}


def _fp_hists(rng: random.Random, target: _Target, alert_jd: float) -> list[dict[str, Any]] | None:
    """Forced photometry on up to 30 earlier difference images; sometimes not computed at all."""
    if rng.random() < 0.15:
        return None
    days_before = sorted(
        (rng.uniform(0.02, _HISTORY_DAYS) for _ in range(rng.randint(0, 30))), reverse=True
    )
    measurements = []
    for days in days_before:
        jd = alert_jd - days
        fid = _pick_filter(rng)
        zero_point = rng.gauss(26.2, 0.1)
        limit = rng.uniform(18.8, 21.2)
        flux_uncertainty = 10 ** (0.4 * (zero_point - limit)) / 5.0
        flux = 10 ** (0.4 * (zero_point - target.magnitude(fid, days)))
        measurements.append(
            _round_float_fields(
                {
                    "field": target.field,
                    "rcid": target.rcid,
                    "fid": fid,
                    "pid": _processing_id(jd, target.rcid),
                    "rfid": (target.field * 10 + fid) * 100 + target.rcid,
                    "sciinpseeing": rng.uniform(1.6, 4.0),
                    "scibckgnd": rng.uniform(80.0, 400.0),
                    "scisigpix": rng.uniform(5.0, 14.0),
                    "magzpsci": zero_point,
                    "magzpsciunc": rng.uniform(1e-6, 5e-5),
                    "exptime": 30.0,
                    "diffmaglim": limit,
                    "programid": _PUBLIC_PROGRAM_ID,
                    "jd": jd,
                    "forcediffimflux": flux + rng.gauss(0.0, flux_uncertainty),
                    "forcediffimfluxunc": flux_uncertainty,
                    "procstatus": "0",
                    "distnr": target.distnr * _ARCSEC_PER_PIXEL,
                    "ranr": target.ranr,
                    "decnr": target.decnr,
                },
                "fp_hist",
            )
        )
    return measurements


@functools.cache
def _float_fields() -> dict[str, tuple[str, ...]]:
    """Names of the Avro ``float`` fields of each record type, read from the schema."""
    by_record: dict[str, tuple[str, ...]] = {}

    def visit(avro_type: Any) -> None:
        if isinstance(avro_type, list):
            for branch in avro_type:
                visit(branch)
        elif isinstance(avro_type, dict) and avro_type.get("type") == "array":
            visit(avro_type["items"])
        elif isinstance(avro_type, dict) and avro_type.get("type") == "record":
            by_record[avro_type["name"]] = tuple(
                field["name"] for field in avro_type["fields"] if _is_float(field["type"])
            )
            for field in avro_type["fields"]:
                visit(field["type"])

    visit(load_ztf_like_schema())
    return by_record


def _is_float(avro_type: Any) -> bool:
    return avro_type == "float" or (isinstance(avro_type, list) and "float" in avro_type)


def _round_float_fields(record: dict[str, Any], record_name: str) -> dict[str, Any]:
    """Round the record's Avro ``float`` values to float32, in place, so that an alert decoded
    from Avro compares equal to the one that was generated."""
    present = [name for name in _float_fields()[record_name] if record[name] is not None]
    float32_values = array.array("f", [record[name] for name in present]).tolist()
    record.update(zip(present, float32_values, strict=True))
    return record


def _cutouts(rng: random.Random, candidate: dict[str, Any]) -> dict[str, dict[str, Any]]:
    candid, pid = candidate["candid"], candidate["pid"]
    header = _fits_header(
        [
            *_STATIC_STAMP_CARDS,
            _fits_card("CRVAL1", candidate["ra"], "RA at the reference pixel [deg]"),
            _fits_card("CRVAL2", candidate["dec"], "Dec at the reference pixel [deg]"),
            _fits_card("DATE-OBS", _iso_time(candidate["jd"]), "start of exposure (UTC)"),
            _fits_card("MJD-OBS", candidate["jd"] - 2400000.5, "start of exposure [MJD]"),
            _fits_card("EXPTIME", candidate["exptime"], "exposure time [s]"),
            _fits_card("CANDID", candid, "candidate ID"),
        ]
    )
    pool = _stamp_pool()
    file_names = {
        "science": f"candid{candid}_pid{pid}_targ_sci.fits.gz",
        "template": f"candid{candid}_ref.fits.gz",
        "difference": f"candid{candid}_pid{pid}_targ_scimref.fits.gz",
    }
    cutouts = {}
    for kind in _STAMP_KINDS:
        images = pool[kind]
        noise_bits = rng.getrandbits(_STAMP_PIXEL_BITS) & _LOW_MANTISSA_BYTE_MASK
        pixels = images[rng.randrange(len(images))] ^ noise_bits
        if kind == "difference" and candidate["isdiffpos"] == "f":
            pixels ^= _SIGN_BIT_MASK
        fits = header + pixels.to_bytes(_STAMP_PIXEL_BYTES, "big") + _STAMP_DATA_PADDING
        cutouts[f"cutout{kind.capitalize()}"] = {
            "fileName": file_names[kind],
            "stampData": _gzip(fits),
        }
    return cutouts


def _gzip(data: bytes) -> bytes:
    # Float noise has almost no long repeats, so run-length matching alone compresses as well as
    # the default search (within 1 %) at about twice the speed.  zlib writes a zero mtime, which
    # keeps the output deterministic.
    compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS, 8, zlib.Z_RLE)
    return compressor.compress(data) + compressor.flush()


@functools.cache
def _stamp_pool() -> dict[str, tuple[int, ...]]:
    """A few dozen pixel arrays per cutout kind, as big-endian float32 bytes held in an int so
    per-alert variation is a single XOR.  Rendering pixels in pure Python costs milliseconds
    per image, so alerts draw from this pool instead."""
    rng = random.Random(_STAMP_POOL_SEED)
    return {
        kind: tuple(_render_stamp(rng, kind) for _ in range(_STAMP_POOL_SIZE))
        for kind in _STAMP_KINDS
    }


def _render_stamp(rng: random.Random, kind: str) -> int:
    """Sky plus Gaussian noise plus a Gaussian point source near the centre."""
    if kind == "science":
        sky, noise = rng.uniform(80.0, 400.0), rng.uniform(5.0, 12.0)
        peak = 10 ** rng.uniform(1.7, 3.6)
    elif kind == "template":
        # A deep coadd: the same kind of sky, far less noise, often only a faint host.
        sky, noise = rng.uniform(80.0, 400.0), rng.uniform(1.5, 4.0)
        peak = 10 ** rng.uniform(0.5, 3.3)
    else:
        sky, noise = 0.0, rng.uniform(6.0, 14.0)
        peak = 10 ** rng.uniform(1.7, 3.3)
    sigma = rng.uniform(1.6, 3.4) / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    centre_x = centre_y = (STAMP_SIDE - 1) / 2.0
    centre_x += rng.uniform(-0.5, 0.5)
    centre_y += rng.uniform(-0.5, 0.5)
    row_profile = [math.exp(-((x - centre_x) ** 2) / (2.0 * sigma**2)) for x in range(STAMP_SIDE)]
    column_profile = [
        math.exp(-((y - centre_y) ** 2) / (2.0 * sigma**2)) for y in range(STAMP_SIDE)
    ]
    pixels = array.array(
        "f",
        (
            sky + rng.gauss(0.0, noise) + peak * row_weight * column_weight
            for column_weight in column_profile
            for row_weight in row_profile
        ),
    )
    if sys.byteorder == "little":
        pixels.byteswap()  # FITS data are big-endian
    return int.from_bytes(pixels.tobytes(), "big")


def _fits_card(keyword: str, value: bool | float | str, comment: str = "") -> str:
    """One fixed-format 80-character FITS header card."""
    if isinstance(value, bool):
        text = ("T" if value else "F").rjust(20)
    elif isinstance(value, int):
        text = str(value).rjust(20)
    elif isinstance(value, float):
        text = _fits_real(value).rjust(20)
    else:
        text = ("'" + value.replace("'", "''").ljust(8) + "'").ljust(20)
    card = f"{keyword:<8}= {text}" + (f" / {comment}" if comment else "")
    if len(card) > _FITS_CARD:
        raise ValueError(f"FITS card longer than {_FITS_CARD} characters: {card!r}")
    return card.ljust(_FITS_CARD)


def _fits_real(value: float) -> str:
    # 13 significant digits keep every value inside the 20-column fixed-format field; FITS
    # wants an upper-case exponent and a decimal point in the mantissa ("1.0E-05").
    mantissa, _, exponent = f"{value:.13G}".partition("E")
    if "." not in mantissa:
        mantissa += ".0"
    return mantissa + (f"E{exponent}" if exponent else "")


def _fits_header(cards: list[str]) -> bytes:
    text = "".join(cards) + "END".ljust(_FITS_CARD)
    return text.ljust(-(-len(text) // _FITS_BLOCK) * _FITS_BLOCK).encode("ascii")


# Cards every cutout shares; the per-alert ones are appended in _cutouts.  The scale is ZTF's
# 1.01 arcsec per pixel and the reference pixel is the stamp centre (FITS pixels count from 1).
_STATIC_STAMP_CARDS = (
    _fits_card("SIMPLE", True, "conforms to FITS standard"),
    _fits_card("BITPIX", -32, "32-bit IEEE floating point"),
    _fits_card("NAXIS", 2),
    _fits_card("NAXIS1", STAMP_SIDE),
    _fits_card("NAXIS2", STAMP_SIDE),
    _fits_card("BUNIT", "DN"),
    _fits_card("CTYPE1", "RA---TAN"),
    _fits_card("CTYPE2", "DEC--TAN"),
    _fits_card("CRPIX1", (STAMP_SIDE + 1) / 2.0),
    _fits_card("CRPIX2", (STAMP_SIDE + 1) / 2.0),
    _fits_card("CDELT1", -_ARCSEC_PER_PIXEL / 3600.0, "[deg/pixel]"),
    _fits_card("CDELT2", _ARCSEC_PER_PIXEL / 3600.0, "[deg/pixel]"),
    _fits_card("ORIGIN", "kcp.synth", "synthetic image, not real ZTF data"),
)


if __name__ == "__main__":
    sys.exit(main())
