"""GCN's notices beyond VOEvent: classic text notices (--from/--to gcn-text) and JSON notices,
through files, pipes and a topic, with the installed kcp."""

from __future__ import annotations

import orjson
import pytest
from kcptest import kcp_env, run_kcp

from kcp.errors import BadInput
from kcp.formats.gcn_text import parse_notice, write_notice

# The layout of GCN's classic text notices (the Swift-BAT position notice), values made up.
BAT = """TITLE:            GCN/SWIFT NOTICE
NOTICE_DATE:      Wed 02 Dec 26 03:12:34 UT
NOTICE_TYPE:      Swift-BAT GRB Position
TRIGGER_NUM:      1234567,   Seg_Num: 0
GRB_RA:           123.4567d {+08h 13m 49.6s} (J2000),
                  123.5000d {+08h 14m 00.0s} (current),
GRB_DEC:          -12.3456d {-12d 20m 44.2s} (J2000),
GRB_ERROR:        3.00 [arcmin radius, statistical only]
COMMENTS:         SWIFT-BAT GRB Coordinates.
COMMENTS:         This is a rate trigger.
"""
XRT = """TITLE:            GCN/SWIFT NOTICE
NOTICE_TYPE:      Swift-XRT Position
TRIGGER_NUM:      1234567,   Seg_Num: 0
GRB_ERROR:        4.8 [arcsec radius, uncertainty 90%]
"""
# A GCN JSON notice (the unified schema's shape: a $schema URL and plain fields)
JSON_NOTICES = [
    {"$schema": "https://gcn.nasa.gov/schema/v4.0.0/gcn/notices/swift/bat/Guano.schema.json",
     "mission": "Swift", "instrument": "BAT", "alert_type": "initial", "trigger_time":
     "2026-12-02T03:12:30Z", "ra": 123.4567, "dec": -12.3456, "ra_dec_error": 0.05},
    {"$schema": "https://gcn.nasa.gov/schema/v4.0.0/gcn/notices/icecube/lvk_nu_track_search"
     ".schema.json", "mission": "IceCube", "alert_type": "update", "ra": 10.0, "dec": 5.0},
]


def test_a_text_notice_is_its_fields_in_order():
    fields = parse_notice(BAT)
    assert list(fields)[:3] == ["TITLE", "NOTICE_DATE", "NOTICE_TYPE"]
    assert fields["GRB_RA"] == ("123.4567d {+08h 13m 49.6s} (J2000),\n"
                                "123.5000d {+08h 14m 00.0s} (current),")
    assert fields["COMMENTS"] == ["SWIFT-BAT GRB Coordinates.", "This is a rate trigger."]
    assert parse_notice(write_notice(fields).decode()) == fields


@pytest.mark.parametrize("text, says", [
    ("", "empty"),
    ("   indented first\n", "continuation line before any field"),
    ("TITLE: x\nthis is prose\n", "line 2 is not 'KEY: value'"),
])
def test_what_is_not_a_notice_is_bad_input(text, says):
    with pytest.raises(BadInput, match=says):
        parse_notice(text)


def test_text_notices_in_pipes_round_trip(tmp_path):
    env = kcp_env(None, tmp_path)
    stream = (BAT + "\n" + XRT).encode()
    read = run_kcp(["convert", "--from", "gcn-text"], env, stdin=stream)
    assert read.returncode == 0, read.stderr
    records = [orjson.loads(line) for line in read.stdout.splitlines()]
    assert [r["NOTICE_TYPE"] for r in records] == ["Swift-BAT GRB Position", "Swift-XRT Position"]
    written = run_kcp(["convert", "--from", "gcn-text", "--to", "gcn-text"], env, stdin=stream)
    assert written.returncode == 0, written.stderr
    again = run_kcp(["convert", "--from", "gcn-text"], env, stdin=written.stdout)
    assert again.stdout == read.stdout


def test_a_bad_notice_names_its_line_and_skip_goes_past_it(tmp_path):
    env = kcp_env(None, tmp_path)
    stream = (BAT + "\nnot a notice at all\n\n" + XRT).encode()
    failed = run_kcp(["convert", "--from", "gcn-text"], env, stdin=stream)
    assert failed.returncode == 3
    assert failed.stderr.decode().strip() == (
        "kcp: <stdin>:line 12: line 1 is not 'KEY: value' ('not a notice at all'): not a GCN "
        "text notice")
    assert len(failed.stdout.splitlines()) == 1  # what came before is kept
    skipped = run_kcp(["convert", "--from", "gcn-text", "--on-error", "skip"], env, stdin=stream)
    assert skipped.returncode == 0
    assert len(skipped.stdout.splitlines()) == 2


def test_text_and_json_notices_through_topics(tmp_path, kafka_bootstrap, make_topic):
    env = kcp_env(kafka_bootstrap, tmp_path)
    text_topic, json_topic = make_topic(), make_topic()
    (tmp_path / "notices.txt").write_text(BAT + "\n" + XRT)
    sent = run_kcp(["cp", str(tmp_path / "notices.txt"), text_topic, "--from", "gcn-text",
                    "--to", "gcn-text"], env)
    assert sent.returncode == 0, sent.stderr
    raw = run_kcp(["consume", text_topic, "--raw"], env)
    assert raw.stdout.startswith(b"TITLE:            GCN/SWIFT NOTICE\n")  # one notice a message
    found = run_kcp(["consume", text_topic, "--from", "gcn-text", "--where",
                     "NOTICE_TYPE == 'Swift-XRT Position'", "--fields", "GRB_ERROR"], env)
    assert found.returncode == 0, found.stderr
    assert orjson.loads(found.stdout) == {"GRB_ERROR": "4.8 [arcsec radius, uncertainty 90%]"}
    (tmp_path / "notices.jsonl").write_bytes(b"\n".join(orjson.dumps(n) for n in JSON_NOTICES))
    sent = run_kcp(["produce", json_topic, str(tmp_path / "notices.jsonl"), "--to", "json"], env)
    assert sent.returncode == 0, sent.stderr
    found = run_kcp(["consume", json_topic, "--where", "mission == 'IceCube'",
                     "--fields", "alert_type,ra,dec"], env)
    assert found.returncode == 0, found.stderr
    assert orjson.loads(found.stdout) == {"alert_type": "update", "ra": 10.0, "dec": 5.0}
    whole = run_kcp(["consume", json_topic, "-c", "1"], env)
    assert orjson.loads(whole.stdout) == JSON_NOTICES[0]  # $schema and all, as sent
