"""Alerts (ZTF, Rubin, others) mapped onto VOEvent 2.0 packets: who, where and when, and every
field as a Param, with units and UCDs where the survey's schema says."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson

from ...codec import Schema
from ...codec.schemas import named_types
from ...errors import BadInput, UsageError
from .model import SCHEMA_LOCATION, VOEVENT_NAMESPACE, XSI_NAMESPACE
from .packet import NOT_XML_CHARACTER

CUTOUT_POLICIES = ("omit", "reference", "embed")
# What --authority and --cutouts are when not given
DEFAULT_AUTHORITY = "ivo://kcp.local/alerts"
DEFAULT_CUTOUTS = "reference"

# -- alerts as VOEvents -------------------------------------------------------------------------
# Units (VOUnit) and UCDs (IVOA UCD1+) of ZTF alert fields, from the ZTF schema documentation.
_ZTF_UNITS = {
    "jd": "d", "jdstarthist": "d", "jdendhist": "d", "jdstartref": "d", "jdendref": "d",
    "ra": "deg", "dec": "deg", "ranr": "deg", "decnr": "deg",
    "xpos": "pix", "ypos": "pix", "fwhm": "pix", "aimage": "pix", "bimage": "pix",
    "mindtoedge": "pix", "distnr": "pix", "sciinpseeing": "pix",
    "ssdistnr": "arcsec", "distpsnr1": "arcsec", "distpsnr2": "arcsec", "distpsnr3": "arcsec",
    "neargaia": "arcsec", "neargaiabright": "arcsec", "adpctdif1": "arcsec",
    "adpctdif2": "arcsec", "exptime": "s", "zpclrcov": "mag**2",
    # The documentation's DN (data numbers) are what VOUnits calls adu.
    "sky": "adu", "forcediffimflux": "adu", "forcediffimfluxunc": "adu", "scibckgnd": "adu",
    "scisigpix": "adu",
    **dict.fromkeys((
        "magpsf", "sigmapsf", "magap", "sigmagap", "magnr", "sigmagnr", "magdiff", "magfromlim",
        "diffmaglim", "magapbig", "sigmagapbig", "ssmagnr", "sgmag1", "srmag1", "simag1",
        "szmag1", "sgmag2", "srmag2", "simag2", "szmag2", "sgmag3", "srmag3", "simag3", "szmag3",
        "magzpsci", "magzpsciunc", "magzpscirms", "zpmed", "clrmed", "clrrms", "maggaia",
        "maggaiabright"), "mag"),
}
# fp_hist measures distnr in arcsec where candidate and prv_candidate measure it in pixels.
_ZTF_FP_UNITS = {**_ZTF_UNITS, "distnr": "arcsec"}
_ZTF_UCDS = {
    "objectId": "meta.id;meta.main", "candid": "meta.id", "jd": "time.epoch",
    "ra": "pos.eq.ra;meta.main", "dec": "pos.eq.dec;meta.main", "ranr": "pos.eq.ra",
    "decnr": "pos.eq.dec", "magpsf": "phot.mag", "sigmapsf": "stat.error;phot.mag",
    "magap": "phot.mag", "sigmagap": "stat.error;phot.mag", "magnr": "phot.mag",
    "sigmagnr": "stat.error;phot.mag", "fid": "instr.filter", "scorr": "stat.snr",
    "distnr": "pos.angDistance", "distpsnr1": "pos.angDistance", "ssdistnr": "pos.angDistance",
    "exptime": "time.duration;obs.exposure",
}
_RUBIN_UNITS = {"ra": "deg", "dec": "deg", "raErr": "deg", "decErr": "deg",
                "midpointMjdTai": "d", "psfFlux": "nJy", "psfFluxErr": "nJy",
                "scienceFlux": "nJy", "scienceFluxErr": "nJy"}
_RUBIN_UCDS = {"ra": "pos.eq.ra;meta.main", "dec": "pos.eq.dec;meta.main",
               "midpointMjdTai": "time.epoch", "diaSourceId": "meta.id",
               "diaObjectId": "meta.id;meta.main", "alertId": "meta.id"}
_JD_UNIX_EPOCH = 2440587.5
_MJD_TO_JD = 2400000.5
_TT_MINUS_TAI_SECONDS = 32.184  # exact, by definition of TT
_FLOAT32 = struct.Struct("<f")


@dataclass
class _When:
    iso: str
    scale: str  # UTC or TT: the time part of an AstroCoordSystem id


class AlertMapper:
    """Maps an alert record of any schema onto a VOEvent 2.0 record (docs/voevent.md)."""

    def __init__(self, authority: str, cutouts: str) -> None:
        if not authority.startswith("ivo://") or len(authority) <= len("ivo://"):
            raise UsageError(f"--authority {authority!r}: an IVOA authority starts with ivo://")
        if cutouts not in CUTOUT_POLICIES:
            raise UsageError(f"--cutouts must be one of {', '.join(CUTOUT_POLICIES)}")
        self.authority = authority.rstrip("/#")
        self.cutouts = cutouts
        self._named: dict[int, dict[str, Any]] = {}

    def __call__(self, alert: Any, schema: Schema | None) -> dict[str, Any]:
        if not isinstance(alert, dict):
            raise BadInput(f"only records can be written as VOEvent, not {type(alert).__name__}")
        avro_type = schema.parsed if schema is not None else None
        if schema is not None:
            self._named.setdefault(schema.fingerprint, named_types(schema.parsed))
            names = self._named[schema.fingerprint]
        else:
            names = {}
        survey = _survey(alert)
        ivorn = f"{self.authority}#{quote(str(_alert_id(alert, survey)), safe='')}"
        position, when = _where_when(alert, survey)
        what = _WhatBuilder(survey, self.cutouts, names).build(alert, avro_type)
        who = {"AuthorIVORN": self.authority,
               "Date": when.iso if when is not None and when.scale == "UTC" else _now(),
               "Description": f"Converted by kcp from {_SURVEY_TEXT[survey]}"}
        record: dict[str, Any] = {
            "ivorn": ivorn, "role": "observation", "version": "2.0", "Who": who,
            "document": {"namespace": VOEVENT_NAMESPACE, "prefix": "voe"},
            "extra": {"attributes": {"xmlns:xsi": XSI_NAMESPACE,
                                     "xsi:schemaLocation": SCHEMA_LOCATION}},
        }
        if what["Param"] or what["Group"] or what["Table"]:
            record["What"] = what
        if position is not None or when is not None:
            record["WhereWhen"] = _where_when_record(position, when)
        return record


_SURVEY_TEXT = {"ztf": "a ZTF alert", "rubin": "a Rubin alert", "other": "an alert"}


def _survey(alert: dict) -> str:
    candidate = alert.get("candidate")
    if isinstance(candidate, dict) and "jd" in candidate and "magpsf" in candidate:
        return "ztf"
    if isinstance(alert.get("diaSource"), dict):
        return "rubin"
    return "other"


def _alert_id(alert: dict, survey: str) -> Any:
    if survey == "ztf":
        candid = alert.get("candid", alert["candidate"].get("candid"))
        if candid is not None:
            return candid
    if survey == "rubin":
        for value in (alert.get("alertId"), alert["diaSource"].get("diaSourceId")):
            if value is not None:
                return value
    found = _first_id(alert)
    if found is not None:
        return found
    # No id field at all: a digest of the content still names this alert and only this one.
    return hashlib.sha256(orjson.dumps(alert, default=_json_default,
                                       option=orjson.OPT_SORT_KEYS)).hexdigest()[:20]


def _first_id(record: dict) -> Any:
    """The first integer field named ...id / ...Id, looking at a record before its children."""
    for name, value in record.items():
        if name.lower().endswith("id") and isinstance(value, int) and not isinstance(value, bool):
            return value
    for value in record.values():
        if isinstance(value, dict):
            found = _first_id(value)
            if found is not None:
                return found
    return None


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    return str(value)


def _where_when(alert: dict, survey: str) -> tuple[tuple[float, float, float] | None,
                                                     _When | None]:
    """((ra, dec, error radius) in degrees, time) of an alert, where it has them."""
    if survey == "ztf":
        source = alert["candidate"]
    elif survey == "rubin":
        source = alert["diaSource"]
    else:
        source = _record_with_position(alert) or alert
    position = None
    ra = _number(source.get("ra"))
    dec = _number(source.get("dec", source.get("decl")))
    if ra is not None and dec is not None and math.isfinite(ra) and math.isfinite(dec):
        errors = [e for e in (_number(source.get(k)) for k in
                              ("raErr", "decErr", "declErr", "sigmara", "sigmadec"))
                  if e is not None and math.isfinite(e)]
        position = (ra, dec, max(errors) if errors else 0.0)
    return position, _time_of(source) or _time_of(alert)


def _record_with_position(record: dict) -> dict | None:
    if "ra" in record and ("dec" in record or "decl" in record):
        return record
    for value in record.values():
        if isinstance(value, dict):
            found = _record_with_position(value)
            if found is not None:
                return found
    return None


def _time_of(record: dict) -> _When | None:
    jd = _number(record.get("jd"))
    if jd is not None and math.isfinite(jd):
        return _When(_iso_from_jd(jd), "UTC")
    mjd = _number(record.get("mjd"))
    if mjd is not None and math.isfinite(mjd):
        return _When(_iso_from_jd(mjd + _MJD_TO_JD), "UTC")
    for name in ("midpointMjdTai", "midPointTai"):
        tai = _number(record.get(name))
        if tai is not None and math.isfinite(tai):
            # TT is TAI + 32.184 s exactly; VOEvent 2.0 has TT systems but no TAI one.
            tt = tai + _MJD_TO_JD + _TT_MINUS_TAI_SECONDS / 86400
            return _When(_iso_from_jd(tt), "TT")
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _iso_from_jd(jd: float) -> str:
    moment = dt.datetime(1970, 1, 1) + dt.timedelta(
        milliseconds=round((jd - _JD_UNIX_EPOCH) * 86_400_000))
    return moment.isoformat(timespec="milliseconds")


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(timespec="seconds")


def _where_when_record(position: tuple[float, float, float] | None, when: _When | None
                       ) -> dict[str, Any]:
    system = f"{when.scale if when is not None else 'UTC'}-ICRS-TOPO"
    coords: dict[str, Any] = {"coord_system_id": system}
    if when is not None:
        coords["Time"] = {"unit": "s", "TimeInstant": {"ISOTime": when.iso}}
    descriptions = []
    if position is not None:
        ra, dec, error = position
        coords["Position2D"] = {"unit": "deg", "Name1": "RA", "Name2": "Dec",
                                "Value2": {"C1": repr(ra), "C2": repr(dec)},
                                "Error2Radius": repr(error)}
        if not error:
            descriptions.append("The alert gives no position uncertainty: Error2Radius is 0.")
    return {"ObsDataLocation": {
                "ObservatoryLocation": {"id": "GEOSURFACE"},
                "ObservationLocation": {"AstroCoordSystem": {"id": system},
                                        "AstroCoords": coords}},
            "Description": descriptions}


class _WhatBuilder:
    """What: a Param per scalar field, a Group per nested record, a Table per list of records."""

    def __init__(self, survey: str, cutouts: str, names: dict[str, Any]) -> None:
        self.survey = survey
        self.cutouts = cutouts
        self.names = names
        self.groups: list[dict[str, Any]] = []
        self.tables: list[dict[str, Any]] = []

    def build(self, alert: dict, avro_type: Any) -> dict[str, Any]:
        params = self._record(alert, self._resolve(avro_type, dict), "")
        return {"Param": params, "Group": self.groups, "Table": self.tables}

    def _resolve(self, avro_type: Any, container: type) -> Any:
        """The record, map or array definition ``avro_type`` (maybe a union, a name) holds."""
        if isinstance(avro_type, list):
            for branch in avro_type:
                resolved = self._resolve(branch, container)
                if (isinstance(resolved, dict)
                        and _CONTAINERS.get(resolved.get("type")) is container):
                    return resolved
            return None
        if isinstance(avro_type, str):
            return self.names.get(avro_type)
        return avro_type

    def _fields(self, record: dict, avro_type: Any) -> Iterator[tuple[str, Any, Any]]:
        if isinstance(avro_type, dict) and avro_type.get("type") == "record":
            for f in avro_type["fields"]:
                value = record.get(f["name"])
                yield f["name"], value, f["type"]
        else:
            for name, value in record.items():
                yield name, value, None

    def _record(self, record: dict, avro_type: Any, path: str) -> list[dict[str, Any]]:
        """The Params of a record's scalar fields; its records and lists go elsewhere."""
        params = []
        for name, value, field_type in self._fields(record, avro_type):
            full = f"{path}.{name}" if path else name
            if value is None:
                continue
            if isinstance(value, (bytes, bytearray)):
                params += self._cutout(name, value, None)
            elif isinstance(value, dict):
                blob = next((v for v in value.values() if isinstance(v, (bytes, bytearray))),
                            None)
                if blob is not None:
                    file_name = next((v for v in value.values() if isinstance(v, str)), None)
                    params += self._cutout(name, blob, file_name)
                else:
                    self._group(value, self._resolve(field_type, dict), full)
            elif isinstance(value, list):
                array = self._resolve(field_type, list)
                items_type = array.get("items") if array is not None else None
                if value and all(isinstance(v, dict) for v in value):
                    self._table(value, self._resolve(items_type, dict), full)
                elif value:
                    float32 = _is_float32(items_type)
                    text = " ".join(_format(v, float32) for v in value)
                    params.append(self._param(name, text, value[0], full))
            else:
                params.append(self._param(name, _format(value, _is_float32(field_type)), value,
                                          full))
        return params

    def _group(self, record: dict, avro_type: Any, path: str) -> None:
        # Groups do not nest in VOEvent: records inside this one become Groups of their own.
        index = len(self.groups)
        params = self._record(record, avro_type, path)
        if params:
            self.groups.insert(index, {"name": _clean(path), "Param": params})

    def _param(self, name: str, text: str, value: Any, path: str) -> dict[str, Any]:
        units, ucds = self._vocabulary(path)
        return {"name": _clean(name), "value": text, "unit": units.get(name),
                "ucd": ucds.get(name), "dataType": _data_type(value)}

    def _vocabulary(self, path: str) -> tuple[dict[str, str], dict[str, str]]:
        if self.survey == "ztf":
            return (_ZTF_FP_UNITS if path.startswith("fp_hists") else _ZTF_UNITS), _ZTF_UCDS
        if self.survey == "rubin":
            return _RUBIN_UNITS, _RUBIN_UCDS
        return {}, {}

    def _table(self, rows: list[dict], item_type: Any, path: str) -> None:
        columns: dict[str, bool] = {}  # name -> whether it holds 32-bit floats
        if item_type is not None and item_type.get("type") == "record":
            for f in item_type["fields"]:
                columns[f["name"]] = _is_float32(f["type"])
        for row in rows:
            for name in row:
                columns.setdefault(name, False)
        # Only scalar columns: a VOEvent table cell is text.
        samples = {name: next((r.get(name) for r in rows if r.get(name) is not None), None)
                   for name in columns}
        names = [n for n in columns if not isinstance(samples[n], (bytes, bytearray, dict, list))]
        if not names:
            return
        units, ucds = self._vocabulary(path)
        fields = [{"name": _clean(n), "unit": units.get(n), "ucd": ucds.get(n),
                   "dataType": _data_type(samples[n])} for n in names]
        float32 = [columns[n] for n in names]
        data = [[_format(value, f32) if (value := row.get(name)) is not None else ""
                 for name, f32 in zip(names, float32, strict=True)] for row in rows]
        self.tables.append({"name": _clean(path), "Field": fields, "Data": data})

    def _cutout(self, name: str, blob: bytes, file_name: str | None) -> list[dict[str, Any]]:
        if self.cutouts == "omit":
            return []
        name = _clean(name)
        what = f"{_clean(file_name)}, " if file_name else ""
        if self.cutouts == "reference":
            return [{"name": name, "value": _clean(file_name or ""), "dataType": "string",
                     "Description": [f"{what}{len(blob)} bytes, left in the alert"]}]
        return [{"name": name, "dataType": "string",
                 "Value": base64.b64encode(blob).decode("ascii"),
                 "Description": [f"{what}{len(blob)} bytes, base64-encoded in Value"]}]


_CONTAINERS = {"record": dict, "map": dict, "array": list}


def _is_float32(avro_type: Any) -> bool:
    """Whether a field of this type holds 32-bit floats (written in fewer digits)."""
    if isinstance(avro_type, list):
        return "float" in avro_type
    if isinstance(avro_type, dict):
        return avro_type.get("type") == "float"
    return avro_type == "float"


def _data_type(value: Any) -> str:
    if isinstance(value, bool):
        return "string"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "string"


def _format(value: Any, float32: bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "NaN" if value != value else ("+Inf" if value > 0 else "-Inf")
        return _float32_text(value) if float32 else repr(value)
    if isinstance(value, (dict, list)):
        return orjson.dumps(value, default=_json_default).decode()
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    return _clean(value) if isinstance(value, str) else str(value)


def _float32_text(value: float) -> str:
    """The shortest text that reads back as the same 32-bit float (19.30335, not 19.303354263)."""
    for digits in (6, 7, 8):
        text = f"{value:.{digits}g}"
        if _FLOAT32.unpack(_FLOAT32.pack(float(text)))[0] == value:
            return text
    return f"{value:.9g}"


def _clean(text: str) -> str:
    """Text XML can hold: characters it cannot are replaced by U+FFFD."""
    return NOT_XML_CHARACTER.sub("\ufffd", text)
