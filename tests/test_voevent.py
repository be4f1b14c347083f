"""VOEvent: lossless XML -> Avro -> XML, the alert -> VOEvent mapping, safe parsing, every command.

Real packets and the VOEvent 2.0 XSD are read in place from ../shared/data/voevent (tests skip
without them); ZTF-like alerts come from kcp.synth.  "Equal" means equal canonical XML (C14N, with
comments) once whitespace-only text between child nodes is dropped: docs/voevent.md.
"""

from __future__ import annotations

import base64
import io
import re
import socket
import struct
import time
import tracemalloc
from datetime import datetime
from pathlib import Path

import fastavro
import orjson
import pytest
from kcptest import json_lines, kcp_env, real_ztf_files, run_kcp, shared
from lxml import etree

from kcp.codec import AvroToJson, JsonToAvro, Schema
from kcp.errors import BadInput, UsageError
from kcp.formats import FORMATS, format_for_path, sniff_format
from kcp.formats import voevent as vo
from kcp.message import Message
from kcp.options import Options
from kcp.synth import iter_alerts, load_ztf_like_schema, write_night

NOT_WELL_FORMED = "FRB140514_update.xml"
# A parser for the tests' own checks, as hardened as kcp's.
PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


def canonical(data: bytes) -> bytes:
    """C14N with comments, whitespace-only text between child nodes dropped."""
    root = etree.fromstring(data, PARSER)
    for node in root.iter():
        if len(node):
            if node.text is not None and node.text.isspace():
                node.text = None
            for child in node:
                if child.tail is not None and child.tail.isspace():
                    child.tail = None
    return etree.tostring(root.getroottree(), method="c14n", with_comments=True)


@pytest.fixture(scope="module")
def packets() -> list[Path]:
    """Every real packet but the one that is not well-formed XML."""
    found = sorted(shared("voevent", "packets").rglob("*.xml"))
    return [p for p in found if p.name != NOT_WELL_FORMED]


@pytest.fixture(scope="module")
def xsd() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(shared("voevent", "schema", "VOEvent-v2.0.xsd"))))


def valid(xsd: etree.XMLSchema, data: bytes) -> bool:
    return xsd.validate(etree.fromstring(data, PARSER))


@pytest.fixture(scope="module")
def parser():
    return vo.hardened_parser()


def round_trip(data: bytes, parser) -> bytes:
    return vo.write_packet(vo.read_packet(data, parser), parser)


# -- lossless round trips -----------------------------------------------------------------------
def test_every_real_packet_round_trips_and_stays_valid(packets, xsd, parser):
    assert len(packets) >= 26
    valid_inputs = 0
    for path in packets:
        data = path.read_bytes()
        out = round_trip(data, parser)
        assert canonical(out) == canonical(data), path
        assert out.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n')
        if valid(xsd, data):
            valid_inputs += 1
            assert valid(xsd, out), path
    assert valid_inputs >= 18  # the 2.0 packets; 1.1, 2.1 and no-namespace ones are not


def test_records_survive_avro_and_json(packets, parser):
    schema = vo.voevent_schema()
    to_json, to_avro = AvroToJson(), JsonToAvro()
    for path in packets:
        data = path.read_bytes()
        record = vo.read_packet(data, parser)
        body = io.BytesIO()
        fastavro.schemaless_writer(body, schema.parsed, record)
        body.seek(0)
        assert fastavro.schemaless_reader(body, schema.parsed) == record
        line = to_json(record, schema)
        assert to_avro(line, schema) == record
        # JSON read without the schema (plain dicts) writes the same packet.
        assert canonical(vo.write_packet(orjson.loads(line), parser)) == canonical(data), path


def test_typed_fields_are_what_jq_users_expect(parser):
    packets = shared("voevent", "packets")
    xrt = vo.read_packet((packets / "voeventdb" / "XRT_Pos_655721-326.xml").read_bytes(), parser)
    assert xrt["ivorn"] == "ivo://nasa.gsfc.gcn/SWIFT#XRT_Pos_655721-326"
    assert (xrt["role"], xrt["version"]) == ("observation", "2.0")
    assert xrt["Citations"]["EventIVORN"][0] == {
        "cite": "followup", "ivorn": "ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_655721-214",
        "extra": None}
    coords = xrt["WhereWhen"]["ObsDataLocation"]["ObservationLocation"]["AstroCoords"]
    assert coords["Position2D"]["unit"] == "deg"
    assert set(coords["Position2D"]["Value2"]) == {"C1", "C2", "extra"}
    params = {p["name"]: p for p in xrt["What"]["Param"]}
    assert params["TrigID"]["value"] == "655721"
    assert xrt["document"] == {"namespace": "http://www.ivoa.net/xml/VOEvent/v2.0",
                               "prefix": "voe", "prolog": [], "epilog": []}
    assert xrt["extra"]["attributes"]["xmlns:xsi"] == "http://www.w3.org/2001/XMLSchema-instance"
    assert "xsi:schemaLocation" in xrt["extra"]["attributes"]
    assert xrt["Who"]["extra"] is None and params["TrigID"]["extra"] is None

    raptor = vo.read_packet(
        (packets / "ivoa-std" / "voevent-ex1_raptor_v2.1.xml").read_bytes(), parser)
    table = raptor["What"]["Table"][0]
    assert [f["name"] for f in table["Field"]] == ["(m-M)", "err(m-M)", "D", "REFCODE"]
    assert table["Data"][0] == ["33.16", "0.38", "51.3", "1997ApJS..109..333W"]
    assert raptor["Why"]["Inference"][0]["probability"] == "0.99"
    # The comments between C1 and C2 are kept, in place.
    value2 = raptor["WhereWhen"]["ObsDataLocation"]["ObservationLocation"]["AstroCoords"][
        "Position2D"]["Value2"]
    assert value2["extra"] == {"attributes": {}, "fragments": ["<!-- RA  -->", "<!-- Dec -->"],
                               "order": ["C1", "#", "C2", "#"]}


ODD_PACKET = """<?xml version='1.0' encoding='ISO-8859-1' standalone="yes"?>
<!-- before the root -->
<?kcp-test some data?>
<voe:VOEvent xmlns:voe="http://www.ivoa.net/xml/VOEvent/v2.0"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:ext="urn:example:ext"
    ivorn="ivo://example/test#1" role="test" version="2.0" ext:flag="yes"
    xsi:schemaLocation="http://www.ivoa.net/xml/VOEvent/v2.0 VOEvent-v2.0.xsd">
  <Who>
    <AuthorIVORN>ivo://example/author</AuthorIVORN>
    <Author><contactName>A &amp; B</contactName><contactName>Second</contactName></Author>
  </Who>
  <What>
    <Group name="ipn">Free text inside a group
      <Param name="x" value="1"/> and after a param
    </Group>
    <Param name="gecam" value="2" datatype="float" xml:lang="en"/>
    <Param name="quoted" value="say &quot;hi&quot; \xc2\xb0 &#176; \xb0"/>
    <Param name="controls" value="a&#10;b&#13;c&#9;d"/>
    <ext:Custom a="1"><Inner/>text</ext:Custom>
    <Description><![CDATA[<b>bold</b> & co]]></Description>
    <Param name="commented"><!-- a note --><Description>d</Description></Param>
    <Table><Field name="c"/>
      <Data><TR><TD>1</TD><TD/></TR><TR ext:x="1"><TD>2</TD></TR></Data></Table>
    <Table><Data/></Table>
    <Table><Data><TR xmlns:n3="urn:n3"><TD>declares</TD></TR></Data></Table>
    <Group name="scoped" xmlns:n2="urn:n2"><Param name="p" n2:attr="v"/></Group>
    <Param name="cdata-time"><Value>  spaced  </Value></Param>
  </What>
  <How>   </How>
  <Who><AuthorIVORN>a second Who</AuthorIVORN></Who>
  <Citations><EventIVORN cite="followup">ivo://x<!-- c --></EventIVORN></Citations>
  <voe:Description>qualified, so not the standard's Description</voe:Description>
</voe:VOEvent>
<!-- after the root -->
""".encode("latin-1")


def test_what_the_typed_model_cannot_hold_is_kept_in_extra(parser):
    record = vo.read_packet(ODD_PACKET, parser)
    assert canonical(vo.write_packet(record, parser)) == canonical(ODD_PACKET)
    assert record["document"]["prolog"] == ["<!-- before the root -->", "<?kcp-test some data?>"]
    assert record["document"]["epilog"] == ["<!-- after the root -->"]
    assert record["extra"]["attributes"]["ext:flag"] == "yes"
    assert record["extra"]["attributes"]["xmlns:ext"] == "urn:example:ext"
    assert record["Who"]["Author"]["contactName"] == ["A & B", "Second"]
    ipn, scoped = record["What"]["Group"]
    assert ipn["Param"][0]["name"] == "x"
    assert ipn["extra"]["fragments"] == ["Free text inside a group\n      ",
                                         " and after a param\n    "]
    assert ipn["extra"]["order"] == ["#", "Param", "#"]
    assert scoped["extra"]["attributes"] == {"xmlns:n2": "urn:n2"}
    assert scoped["Param"][0]["extra"]["attributes"] == {"n2:attr": "v"}
    params = {p["name"]: p for p in record["What"]["Param"]}
    assert params["gecam"]["extra"]["attributes"] == {"datatype": "float", "xml:lang": "en"}
    assert params["quoted"]["value"] == 'say "hi" \xc2\xb0 \xb0 \xb0'  # mojibake kept as it is
    assert params["controls"]["value"] == "a\nb\rc\td"
    assert params["commented"]["extra"]["fragments"] == ["<!-- a note -->"]
    assert params["cdata-time"]["Value"] == "  spaced  "
    assert record["What"]["Description"] == ["<b>bold</b> & co"]
    # A TR with an attribute or a namespace declaration: the Data is kept as XML.
    assert [t["Data"] for t in record["What"]["Table"]] == [None, [], None]
    assert record["How"]["extra"]["fragments"] == ["   "]
    assert len(record["extra"]["fragments"]) == 2  # the second Who, the qualified Description
    assert record["Citations"]["EventIVORN"] == []


@pytest.mark.parametrize("packet", [
    # a default namespace: the children inherit it and are still the standard's elements
    b'<VOEvent xmlns="http://www.ivoa.net/xml/VOEvent/v2.0" ivorn="ivo://a/b#1" version="2.0">'
    b'<Who><Date>2024-01-01T00:00:00</Date></Who><Other>x</Other></VOEvent>',
    # no namespace, and the VOEvent 1.1 namespace
    b'<VOEvent ivorn="ivo://a/b#1" version="2.0"><What><Param name="p" value="1"/></What>'
    b'</VOEvent>',
    b'<v:VOEvent xmlns:v="http://www.ivoa.net/xml/VOEvent/v1.1" ivorn="ivo://a/b#1" '
    b'version="1.1"><Who><AuthorIVORN>ivo://a</AuthorIVORN></Who></v:VOEvent>',
    # children qualified with the root's prefix are not the standard's: fragments
    b'<v:VOEvent xmlns:v="http://www.ivoa.net/xml/VOEvent/v2.0" ivorn="i" version="2.0">'
    b'<v:Who><v:Date>now</v:Date></v:Who></v:VOEvent>',
])
def test_namespaces_of_every_kind_round_trip(packet, parser):
    record = vo.read_packet(packet, parser)
    assert canonical(vo.write_packet(record, parser)) == canonical(packet)


def test_default_namespace_children_are_typed(parser):
    record = vo.read_packet(
        b'<VOEvent xmlns="http://www.ivoa.net/xml/VOEvent/v2.0" ivorn="i" version="2.0">'
        b'<Who><Date>2024-01-01T00:00:00</Date></Who></VOEvent>', parser)
    assert record["Who"]["Date"] == "2024-01-01T00:00:00"
    assert record["document"]["prefix"] is None


def test_records_edited_by_hand_still_write(parser, xsd):
    record = vo.read_packet(
        (shared("voevent", "packets") / "voevent-parse" / "SWIFT_bat_position_v2.0_example.xml"
         ).read_bytes(), parser)
    # A Param added with jq: the recorded order does not list it; it is written after the rest.
    record["What"]["Param"].append({"name": "added", "value": "1"})
    record["What"]["Description"] = "one description, not a list"
    out = vo.write_packet(record, parser)
    assert b'<Param name="added" value="1"/>' in out
    assert b"<Description>one description, not a list</Description>" in out
    assert valid(xsd, out)
    # A record made from scratch: the default document is VOEvent 2.0 with the voe prefix.
    minimal = vo.write_packet({"ivorn": "ivo://a/b#1", "version": "2.0",
                               "Who": {"Date": "2024-01-01T00:00:00"}}, parser)
    assert minimal.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<voe:VOEvent '
                              b'xmlns:voe="http://www.ivoa.net/xml/VOEvent/v2.0"')
    assert valid(xsd, minimal)


@pytest.mark.parametrize(("record", "message"), [
    ({"ivorn": "i", "extra": {"fragments": ["<unclosed>"]}}, "do not make a well-formed"),
    ({"ivorn": "i", "extra": {"fragments": ["&undefined;"]}}, "do not make a well-formed"),
    ({"ivorn": "i", "extra": {"attributes": {"bad name": "x"}}}, "not an attribute name"),
    ({"ivorn": "a\x00b"}, "U+0000 cannot be written"),
    ({"ivorn": "i", "Who": ["not", "a", "record"]}, "<Who>: expected an object"),
    ({"ivorn": "i", "document": {"prefix": "voe"}}, "without a namespace"),
    ({"ivorn": "i", "document": {"namespace": "urn:x", "prefix": 'v a="1"'}}, "not a namespace"),
])
def test_records_that_cannot_be_xml_are_bad_input(record, message, parser):
    with pytest.raises(BadInput, match=re.escape(message)):
        vo.write_packet(record, parser)


# -- safe parsing -------------------------------------------------------------------------------
def read(data: bytes, **options) -> Message:
    message = Message(value=data)
    vo.VoeventReader(Options(**options)).decode(message)
    return message


def test_external_entities_read_nothing(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    attacks = [
        f'<?xml version="1.0"?><!DOCTYPE VOEvent [<!ENTITY x SYSTEM "file://{secret}">]>'
        '<VOEvent ivorn="i" version="2.0"><Description>&x;</Description></VOEvent>',
        f'<!DOCTYPE VOEvent [<!ENTITY % p SYSTEM "file://{secret}"> %p;]><VOEvent/>',
    ]
    for attack in attacks:
        for data in (attack.encode(), attack.encode("utf-16"), attack.encode("utf-16-be")):
            with pytest.raises(BadInput, match="refused: the document has a DTD") as caught:
                read(data)
            assert "TOPSECRET" not in str(caught.value)


def test_a_dtd_is_refused_even_if_the_prolog_scan_missed_it(tmp_path, monkeypatch):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    monkeypatch.setattr(vo.packet, "_dtd_in_prolog", lambda data: False)
    data = (f'<!DOCTYPE VOEvent [<!ENTITY x SYSTEM "file://{secret}">]>'
            '<VOEvent ivorn="i" version="2.0"><Description>&x;</Description></VOEvent>').encode()
    with pytest.raises(BadInput, match="refused: the document has a DTD"):
        read(data)


def test_entity_expansion_is_refused_quickly():
    laughs = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    data = (f'<!DOCTYPE VOEvent [<!ENTITY l0 "lol">{laughs}]>'
            '<VOEvent ivorn="i" version="2.0"><Description>&l9;</Description></VOEvent>').encode()
    started = time.monotonic()
    for payload in (data, data.decode().encode("utf-16")):
        with pytest.raises(BadInput, match="refused"):
            read(payload)
    assert time.monotonic() - started < 1


def test_external_dtd_and_network_are_never_touched():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.3)
    port = listener.getsockname()[1]
    attacks = [
        f'<!DOCTYPE VOEvent SYSTEM "http://127.0.0.1:{port}/voevent.dtd"><VOEvent/>',
        f'<!DOCTYPE VOEvent [<!ENTITY x SYSTEM "http://127.0.0.1:{port}/x">]><VOEvent>&x;'
        "</VOEvent>",
    ]
    try:
        for attack in attacks:
            for data in (attack.encode(), attack.encode("utf-16")):
                with pytest.raises(BadInput, match="refused"):
                    read(data)
        with pytest.raises(TimeoutError):
            listener.accept()
    finally:
        listener.close()


@pytest.mark.parametrize(("data", "message"), [
    (b"A sample update.\r\n<?xml version='1.0'?><VOEvent/>",
     "not well-formed XML: Start tag expected, '<' not found, line 1, column 1"),
    (b"<VOEvent>\n<Who>\n</VOEvent>", "not well-formed XML: Opening and ending tag mismatch: Who"
                                      " line 2 and VOEvent, line 3"),
    (b'<?xml version="1.0"?><votable/>', "not a VOEvent packet: the root element is <votable>"),
    (b"<VOEvent>&unknown;</VOEvent>", "Entity 'unknown' not defined"),
])
def test_bad_packets_say_what_is_wrong(data, message):
    with pytest.raises(BadInput, match=re.escape(message)):
        read(data)


def test_packets_over_the_size_limit_are_refused():
    data = b'<VOEvent ivorn="i" version="2.0"><Description>' + b"x" * 2000 + b"</Description>" \
           b"</VOEvent>"
    with pytest.raises(BadInput, match="over the limit of 1,000"):
        read(data, max_xml_bytes=1000)
    assert read(data, max_xml_bytes=5000).datum["Description"] == "x" * 2000


def many_attributes(count: int, namespaced: bool) -> bytes:
    """A VOEvent whose <Who> carries ``count`` attributes of its own (in a namespace of their
    own when ``namespaced``): none is in the typed model, all go to ``extra``."""
    prefix = "p:" if namespaced else ""
    attributes = " ".join(f'{prefix}a{i}="v"' for i in range(count))
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<voe:VOEvent '
            f'xmlns:voe="http://www.ivoa.net/xml/VOEvent/v2.0" xmlns:p="urn:p" '
            f'ivorn="ivo://x/y#1" role="test" version="2.0">\n<Who {attributes}>'
            f"<AuthorIVORN>ivo://x</AuthorIVORN></Who>\n</voe:VOEvent>\n").encode()


def test_sixty_thousand_attributes_take_linear_time(tmp_path):
    """lxml's items() looks each value up by name: 60,000 attributes took 17 s (25 s in a
    namespace, the case here) in `kcp convert`; read in one pass they take about 1.4 s each
    way. The packet (770 kB) is under the default --max-xml-bytes, which bounds the work."""
    namespaced = True
    packet = many_attributes(60_000, namespaced)
    env = kcp_env(None, tmp_path)
    started = time.monotonic()
    as_json = run_kcp(["convert", "--from", "voevent"], env, stdin=packet, timeout=60)
    taken = time.monotonic() - started
    assert as_json.returncode == 0 and as_json.stderr == b"", as_json.stderr
    [record] = json_lines(as_json.stdout)
    attributes = record["Who"]["extra"]["attributes"]
    assert len(attributes) == 60_000
    assert attributes[f"{'p:' if namespaced else ''}a59999"] == "v"
    back = run_kcp(["convert", "--to", "voevent"], env, stdin=as_json.stdout, timeout=60)
    assert back.returncode == 0 and back.stderr == b"", back.stderr
    def who(document: bytes) -> dict[str, str]:  # not items(): quadratic, as above
        return {a.attrname: str(a) for a in etree.fromstring(document)[0].xpath("@*")}

    assert who(back.stdout) == who(packet)
    assert taken < 8, f"{taken:.1f} s to read 60,000 attributes"
    over = run_kcp(["convert", "--from", "voevent", "--max-xml-bytes", "100000"], env,
                   stdin=packet)
    assert over.returncode == 3 and b"over the limit of 100,000" in over.stderr, over.stderr


# -- streams of packets -------------------------------------------------------------------------
def stream_messages(data: bytes, **options) -> list[Message]:
    return list(vo.VoeventReader(Options(**options)).read_stream(io.BytesIO(data), "in.xml"))


def test_streams_split_into_documents_whatever_the_chunks(packets, parser, monkeypatch):
    documents = [round_trip(p.read_bytes(), parser) for p in packets]
    tricky = (b'<?xml version="1.0"?>\n<!-- a comment with\n<?xml version="1.0"?> in it -->\n'
              b'<VOEvent ivorn="i" version="2.0"><Description><![CDATA[\n<?xml version="1.0"?>'
              b"]]></Description><?pi \n<?xml ?></VOEvent>\n")
    stream = b"".join(documents) + tricky + documents[0]
    for chunk in (7, 64, 1 << 16):
        monkeypatch.setattr(vo.documents, "CHUNK", chunk)
        messages = stream_messages(stream)
        assert [m.value for m in messages] == [*documents, tricky, documents[0]]
        assert all(m.error is None and m.decoded is False for m in messages)
        assert messages[-1].position == f"document {len(documents) + 2}"


def test_one_packet_per_file_is_named_by_the_file_alone():
    (message,) = stream_messages(b"A sample update.\r\n<?xml version='1.0'?><VOEvent/>")
    assert str(message.error) == (
        "in.xml: not well-formed XML: Start tag expected, '<' not found, line 1, column 1")
    (message,) = stream_messages(b'<?xml version="1.0"?><VOEvent ivorn="i" version="2.0"/>\n')
    assert message.error is None and message.position is None


@pytest.mark.parametrize("chunk", [100, 1 << 16])
def test_an_oversized_packet_in_a_stream_is_one_bad_record(chunk, monkeypatch):
    monkeypatch.setattr(vo.documents, "CHUNK", chunk)
    small = b'<?xml version="1.0"?><VOEvent ivorn="i" version="2.0"/>\n'
    big = b'<?xml version="1.0"?><VOEvent><Description>' + b"x" * 5000 + b"</Description>" \
          b"</VOEvent>\n"
    messages = stream_messages(small * 50 + big + small * 50, max_xml_bytes=1000)
    assert [m.error is None for m in messages] == [True] * 50 + [False] + [True] * 50
    assert str(messages[50].error) == (
        "in.xml:document 51: packet is over the limit of 1,000 bytes (--max-xml-bytes)")


def test_an_oversized_document_is_not_held_in_memory():
    huge = b'<?xml version="1.0"?><VOEvent><!--' + b"-x" * 5_000_000 + b"--></VOEvent>\n"
    small = b'<?xml version="1.0"?><VOEvent ivorn="i" version="2.0"/>\n'
    stream = io.BytesIO(huge + small)
    tracemalloc.start()
    try:
        documents = list(vo.split_documents(stream, 100_000))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert documents == [(None, 1, False), (small, 2, True)]
    assert peak < 1_000_000  # a 10 MB document, read through a buffer of about 64 kB


def test_a_torn_stream_is_cut_after_its_last_whole_document(parser, tmp_path):
    document = vo.write_packet({"ivorn": "ivo://a/b#1", "version": "2.0"}, parser)
    path = tmp_path / "torn.xml"
    path.write_bytes(document * 3 + document[:40])
    with open(path, "r+b") as stream:
        vo.VoeventWriter(Options()).recover(stream)
    assert path.read_bytes() == document * 3
    with open(path, "r+b") as stream:  # whole: nothing to cut
        vo.VoeventWriter(Options()).recover(stream)
    assert path.read_bytes() == document * 3


def test_xml_is_sniffed_and_named_by_its_extension():
    assert FORMATS["voevent"].extensions == (".xml",)
    assert format_for_path("packets/a.xml.gz") is FORMATS["voevent"]
    for head in (b'<?xml version="1.0"?>', b"\n  <voe:VOEvent", b'\xef\xbb\xbf<?xml v'):
        assert sniff_format(head) is FORMATS["voevent"]


# -- alerts as VOEvents -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ztf_schema() -> Schema:
    return Schema(load_ztf_like_schema())


def as_voevent(alert: dict, schema: Schema | None, **options) -> bytes:
    writer = vo.VoeventWriter(Options(**options))
    return writer.encode(Message(datum=alert, schema=schema, decoded=True))


def test_synthetic_ztf_alerts_become_valid_voevents(ztf_schema, xsd):
    for cutouts in vo.CUTOUT_POLICIES:
        for alert in iter_alerts(40, seed=11):
            out = as_voevent(alert, ztf_schema, cutouts=cutouts)
            assert valid(xsd, out), xsd.error_log.last_error


def test_the_ztf_mapping(ztf_schema, parser):
    alert = next(iter_alerts(1, seed=5))
    candidate = alert["candidate"]
    record = vo.read_packet(as_voevent(alert, ztf_schema), parser)
    assert record["ivorn"] == f"ivo://kcp.local/alerts#{alert['candid']}"
    assert record["role"] == "observation"
    coords = record["WhereWhen"]["ObsDataLocation"]["ObservationLocation"]["AstroCoords"]
    assert coords["coord_system_id"] == "UTC-ICRS-TOPO"
    assert float(coords["Position2D"]["Value2"]["C1"]) == candidate["ra"]
    assert float(coords["Position2D"]["Value2"]["C2"]) == candidate["dec"]
    iso = coords["Time"]["TimeInstant"]["ISOTime"]
    assert record["Who"]["Date"] == iso
    # ISOTime is the Julian date to the millisecond.
    seconds = (float(candidate["jd"]) - 2440587.5) * 86400
    parsed = datetime.fromisoformat(iso + "+00:00").timestamp()
    assert abs(parsed - seconds) <= 0.0006
    group = next(g for g in record["What"]["Group"] if g["name"] == "candidate")
    params = {p["name"]: p for p in group["Param"]}
    assert (params["magpsf"]["unit"], params["magpsf"]["ucd"]) == ("mag", "phot.mag")
    assert (params["ra"]["unit"], params["ra"]["ucd"]) == ("deg", "pos.eq.ra;meta.main")
    assert (params["jd"]["unit"], params["jd"]["ucd"]) == ("d", "time.epoch")
    assert params["fid"]["dataType"] == "int" and params["magpsf"]["dataType"] == "float"
    # A 32-bit float is written in the fewest digits that read back as the same float.
    magpsf = params["magpsf"]["value"]
    assert struct.unpack("f", struct.pack("f", float(magpsf)))[0] == candidate["magpsf"]
    assert len(magpsf) <= 10
    tables = {t["name"]: t for t in record["What"]["Table"]}
    history = tables["prv_candidates"]
    assert len(history["Data"]) == len(alert["prv_candidates"])
    names = [f["name"] for f in history["Field"]]
    upper_limit = next(i for i, p in enumerate(alert["prv_candidates"]) if p["magpsf"] is None)
    assert history["Data"][upper_limit][names.index("magpsf")] == ""
    fp_units = {f["name"]: f["unit"] for f in tables["fp_hists"]["Field"]}
    assert fp_units["distnr"] == "arcsec"  # pixels in candidate, arcsec in fp_hist


def test_cutout_policies(ztf_schema, parser):
    alert = next(iter_alerts(1, seed=5))

    def cutout_params(**options) -> dict:
        record = vo.read_packet(as_voevent(alert, ztf_schema, **options), parser)
        return {p["name"]: p for p in record["What"]["Param"] if p["name"].startswith("cutout")}

    assert cutout_params(cutouts="omit") == {}
    named = cutout_params(cutouts="reference")["cutoutScience"]
    assert named["value"] == alert["cutoutScience"]["fileName"]
    assert f"{len(alert['cutoutScience']['stampData'])} bytes" in named["Description"][0]
    embedded = cutout_params(cutouts="embed")["cutoutDifference"]
    assert base64.b64decode(embedded["Value"]) == alert["cutoutDifference"]["stampData"]


def test_real_ztf_alerts_become_valid_voevents(xsd):
    good, _ = real_ztf_files()
    count = 0
    for path in good:
        with open(path, "rb") as stream:
            reader = fastavro.reader(stream)
            schema = Schema(reader.writer_schema)
            for alert in reader:
                out = as_voevent(alert, schema, authority="ivo://example.org/ztf")
                assert valid(xsd, out), (path, xsd.error_log.last_error)
                assert f'ivorn="ivo://example.org/ztf#{alert["candid"]}"'.encode() in out
                count += 1
    assert count >= 90


def test_rubin_and_other_alerts_have_a_default_mapping(parser, xsd):
    rubin = {"alertId": 170032881890001, "diaSource": {
        "diaSourceId": 42, "ra": 150.1, "dec": -2.5, "raErr": 1e-5, "decErr": 2e-5,
        "midpointMjdTai": 60000.5, "psfFlux": 1234.5}, "prvDiaSources": None,
        "cutoutDifference": b"\x1f\x8b fits"}
    record = vo.read_packet(as_voevent(rubin, None), parser)
    assert record["ivorn"] == "ivo://kcp.local/alerts#170032881890001"
    coords = record["WhereWhen"]["ObsDataLocation"]["ObservationLocation"]["AstroCoords"]
    # MJD 60000.5 TAI is 2023-02-25T12:00:00 TAI; TT = TAI + 32.184 s.
    assert coords["Time"]["TimeInstant"]["ISOTime"] == "2023-02-25T12:00:32.184"
    assert coords["coord_system_id"] == "TT-ICRS-TOPO"
    assert coords["Position2D"]["Error2Radius"] == "2e-05"
    assert valid(xsd, vo.write_packet(record, parser))

    plain = {"name": "an event", "ra": 10.0, "dec": 20.0, "mjd": 59000.0, "flags": [1, 2],
             "extra": {"note": "x\x01y"}}
    record = vo.read_packet(as_voevent(plain, None), parser)
    assert record["ivorn"].startswith("ivo://kcp.local/alerts#")  # a digest: no id field
    assert record["WhereWhen"]["Description"] == [
        "The alert gives no position uncertainty: Error2Radius is 0."]
    params = {p["name"]: p["value"] for p in record["What"]["Param"]}
    assert params == {"name": "an event", "ra": "10.0", "dec": "20.0", "mjd": "59000.0",
                      "flags": "1 2"}
    assert record["What"]["Group"][0]["Param"][0]["value"] == "x\ufffdy"
    with pytest.raises(BadInput, match="only records"):
        as_voevent(["not", "a", "record"], None)
    with pytest.raises(UsageError, match="ivo://"):
        vo.VoeventWriter(Options(authority="http://example.org"))


# -- the command line, in process ---------------------------------------------------------------
def test_convert_xml_to_json_and_back(kcp, packets):
    data = next(p for p in packets if p.name == "BAT_GRB_Pos_655721-214.xml").read_bytes()
    as_json = kcp("convert", stdin=data)
    assert as_json.exit_code == 0, as_json.stderr
    (document,) = json_lines(as_json.stdout_bytes)
    assert document["ivorn"] == "ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_655721-214"
    back = kcp("convert", "--to", "voevent", stdin=as_json.stdout_bytes)
    assert back.exit_code == 0, back.stderr
    assert canonical(back.stdout_bytes) == canonical(data)


def test_cp_packets_to_one_stream_and_back(kcp, packets, tmp_path):
    result = kcp("cp", *map(str, packets), "all.xml")
    assert result.exit_code == 0, result.stderr
    assert kcp("cp", "all.xml", "all.jsonl").exit_code == 0
    assert len(Path("all.jsonl").read_bytes().splitlines()) == len(packets)
    assert kcp("cp", "all.jsonl", "again.xml").exit_code == 0
    assert Path("again.xml").read_bytes() == Path("all.xml").read_bytes()
    assert kcp("cp", "all.xml", "all.avro").exit_code == 0
    assert kcp("cp", "all.avro", "from-avro.xml").exit_code == 0
    assert Path("from-avro.xml").read_bytes() == Path("all.xml").read_bytes()


def test_a_bad_packet_names_its_file(kcp, tmp_path):
    bad = shared("voevent", "packets", "FRB_VOEvent", NOT_WELL_FORMED)
    result = kcp("cp", str(bad), "out.jsonl")
    assert result.exit_code == 3
    assert result.stderr == (f"kcp: {bad}: not well-formed XML: Start tag expected, '<' not "
                             "found, line 1, column 1\n")
    good = shared("voevent", "packets", "FRB_VOEvent", "FRB140514_detection.xml")
    skipped = kcp("cp", str(bad), str(good), "out.jsonl", "--on-error", "skip")
    assert skipped.exit_code == 0
    assert len(Path("out.jsonl").read_bytes().splitlines()) == 1


def test_alerts_to_voevent_with_options(kcp, tmp_path, xsd):
    write_night(tmp_path / "night.avro", 5, seed=2)
    result = kcp("cp", "night.avro", "night.xml", "--authority", "ivo://example.org/ztf",
                 "--cutouts", "embed")
    assert result.exit_code == 0, result.stderr
    messages = stream_messages(Path("night.xml").read_bytes())
    assert len(messages) == 5
    for message in messages:
        assert valid(xsd, message.value)
        assert message.datum["ivorn"].startswith("ivo://example.org/ztf#")
    bad = kcp("cp", "night.avro", "x.xml", "--authority", "example.org")
    assert bad.exit_code == 2 and "ivo://" in bad.stderr


# -- end to end, against the broker -------------------------------------------------------------
@pytest.fixture
def env(kafka_bootstrap: str, tmp_path: Path) -> dict[str, str]:
    return kcp_env(kafka_bootstrap, tmp_path)


def payloads_of(bootstrap: str, topic: str, expected: int) -> list[bytes]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "voevent-test",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    found: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(found) < expected and time.monotonic() < deadline:
        found += [m.value() for m in consumer.consume(100, 0.5) if m.error() is None]
    consumer.close()
    return found


@pytest.mark.kafka
def test_packets_through_a_topic(env, topic, packets, kafka_bootstrap, xsd):
    sent = run_kcp(["produce", topic, *map(str, packets)], env)
    assert sent.returncode == 0, sent.stderr
    # As GCN does: one packet per message, the bytes of the file as they are.
    assert payloads_of(kafka_bootstrap, topic, len(packets)) == [p.read_bytes() for p in packets]

    as_json = run_kcp(["consume", topic], env)
    assert as_json.returncode == 0, as_json.stderr
    ivorns = [d["ivorn"] for d in json_lines(as_json.stdout)]
    assert len(ivorns) == len(packets) and all(i.startswith("ivo://") for i in ivorns)

    as_xml = run_kcp(["consume", topic, "--to", "voevent"], env)
    assert as_xml.returncode == 0, as_xml.stderr
    documents = [m.value for m in stream_messages(as_xml.stdout)]
    assert len(documents) == len(packets)
    for path, document in zip(packets, documents, strict=True):
        original = path.read_bytes()
        assert canonical(document) == canonical(original), path
        assert valid(xsd, document) == valid(xsd, original), path

    bad = shared("voevent", "packets", "FRB_VOEvent", NOT_WELL_FORMED)
    refused = run_kcp(["produce", topic, str(bad)], env)
    assert refused.returncode == 3
    assert refused.stderr.decode().startswith(f"kcp: {bad}: not well-formed XML: ")


@pytest.mark.kafka
def test_ztf_alerts_from_a_topic_as_voevents(env, topic, tmp_path, xsd):
    write_night(tmp_path / "night.avro", 20, seed=4)
    assert run_kcp(["produce", topic, str(tmp_path / "night.avro")], env).returncode == 0
    result = run_kcp(["consume", topic, "--to", "voevent", "--cutouts", "omit"], env)
    assert result.returncode == 0, result.stderr
    messages = stream_messages(result.stdout)
    assert len(messages) == 20
    assert all(valid(xsd, m.value) for m in messages)
    # And the VOEvents into a topic of their own, read back as typed JSON.
    xml_topic = f"{topic}_xml"
    copied = run_kcp(["cp", topic, xml_topic, "--to", "voevent"], env)
    assert copied.returncode == 0, copied.stderr
    documents = list(json_lines(run_kcp(["consume", xml_topic], env).stdout))
    assert [d["ivorn"] for d in documents] == [m.datum["ivorn"] for m in messages]


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
def test_a_packet_in_utf16_or_utf32_is_taken_for_xml(encoding):
    from kcp.formats import sniff_format

    head = '\ufeff<?xml version="1.0"?><voe:VOEvent/>'.encode(encoding)[:64]
    assert sniff_format(head).name == "voevent"
