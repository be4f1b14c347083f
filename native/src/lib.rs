//! kcp's compiled Avro -> JSON transcoder (the Python module `kcp.codec.compiled`).
//!
//! `kcp.codec.native` compiles a writer schema once into a flat list of ops (a `Program`); the
//! program then reads Avro bodies and appends kcp-style JSON (docs/json-mapping.md) to one buffer,
//! without building a Python object per value. The output is byte for byte what the Python path
//! (fastavro + `kcp.codec.jsonmap.AvroToJson` + orjson) writes. Where the Python path's result
//! would need Python's own semantics (a negative union index that Python's list indexing wraps, a
//! map holding a key twice, a timestamp out of `datetime`'s range, ...), the program stops with
//! "unsupported" and the caller runs the Python path on that body instead.
//!
//! With `--fields`, the program also holds what `kcp.stages.project_stage` keeps of each datum (a
//! `Projection`): it writes those fields, and reads past the others without writing them (`skip`).
//!
//! Every read is bounds-checked: a malformed body is an error with its byte position, never a
//! panic; a panic all the same is caught at the boundary and reported as an error.

use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

use base64::Engine;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// Decimal scales beyond this leave Python's default decimal context: the Python path decides.
const MAX_DECIMAL_SCALE: u32 = 100_000;
/// `datetime` holds years 1 to 9999: microseconds from 1970-01-01 to those bounds.
const MIN_MICROS: i64 = -62_135_596_800_000_000;
const MAX_MICROS: i64 = 253_402_300_799_999_999;
const DAYS_BEFORE_EPOCH: i64 = 719_163; // date(1970, 1, 1).toordinal()
const MAX_ORDINAL: i64 = 3_652_059; // date(9999, 12, 31).toordinal()

enum Node {
    Null,
    Boolean,
    Long, // Avro int and long: both zig-zag varints, written as they are
    Float,
    Double,
    Bytes,
    Str,
    Fixed(usize),
    Enum(Vec<Vec<u8>>), // each symbol as its JSON string
    Array(usize),
    Map(usize),
    Record(Vec<(Vec<u8>, usize)>), // `"name":` (`,"name":` after the first) and the field's node
    Union(Vec<usize>),
    Timestamp { micros_per_unit: i64, utc: bool },
    Date,
    Time { micros_per_unit: i64 },
    Decimal { precision: usize, scale: u32, fixed: Option<usize> },
    Uuid,
}

/// What `--fields` keeps of a value, as `kcp.stages.project_stage` keeps it: fields of records
/// (and entries of maps) it names, nested as they are; through arrays, that field of every item.
/// Children are other projections, or the value nodes written whole or skipped.
enum Projection {
    Record(Vec<Selected>),
    /// The map's values, and each key `--fields` names with the projection of its value (None:
    /// written whole); any other entry is skipped.
    Map { values: usize, keys: Vec<(Vec<u8>, Option<usize>)> },
    /// The array's items, and the projection of each.
    Array { items: usize, each: usize },
    Union(Vec<usize>),
    /// A value `--fields` names a field of, but that is no record, map or array: skipped. Python
    /// drops its key in a record or map, and writes null for it in an array.
    Absent(usize),
}

enum Selected {
    Skip(usize),
    /// `"name":` and the value node, written whole.
    Whole(Vec<u8>, usize),
    /// `"name":` and the projection of the value: kept only when the value is a record, map or
    /// array.
    Descend(Vec<u8>, usize),
}

#[derive(Clone, Copy)]
enum BytesMode {
    Base64,
    Hex,
    Size,
    Omit,
}

enum Stop {
    /// The body is malformed: what, and at which byte.
    Bad(String, usize),
    /// The body ends before its values do (or declares more of them than its bytes can hold).
    Truncated(String, usize),
    /// Valid, but only the Python path writes it exactly as Python does.
    Unsupported(&'static str, usize),
}

type Step = Result<(), Stop>;

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn long(&mut self) -> Result<i64, Stop> {
        let start = self.pos;
        let mut value: u64 = 0;
        let mut shift = 0;
        loop {
            let Some(&byte) = self.buf.get(self.pos) else {
                return Err(Stop::Truncated("a varint runs past the end".into(), start));
            };
            self.pos += 1;
            value |= u64::from(byte & 0x7F) << shift;
            if byte & 0x80 == 0 {
                return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
            }
            shift += 7;
            if shift > 63 {
                return Err(Stop::Bad("malformed varint (longer than 10 bytes)".into(), start));
            }
        }
    }

    fn take(&mut self, size: usize, what: &str) -> Result<&'a [u8], Stop> {
        if size > self.remaining() {
            return Err(Stop::Truncated(
                format!("{what} of {size} bytes, {} left", self.remaining()),
                self.pos,
            ));
        }
        let slice = &self.buf[self.pos..self.pos + size];
        self.pos += size;
        Ok(slice)
    }

    fn sized(&mut self, what: &str) -> Result<&'a [u8], Stop> {
        let start = self.pos;
        let size = self.long()?;
        if size < 0 {
            return Err(Stop::Bad(format!("negative {what} length {size}"), start));
        }
        self.take(size as usize, what)
    }

    /// A string's bytes, checked to be UTF-8 (fastavro refuses them otherwise).
    fn text(&mut self, what: &str) -> Result<&'a [u8], Stop> {
        let start = self.pos;
        let text = self.sized(what)?;
        if std::str::from_utf8(text).is_err() {
            return Err(Stop::Bad(format!("invalid UTF-8 in a {what}"), start));
        }
        Ok(text)
    }

    /// Microseconds from the epoch of a timestamp in `datetime`'s range.
    fn timestamp(&mut self, micros_per_unit: i64) -> Result<i64, Stop> {
        let start = self.pos;
        self.long()?
            .checked_mul(micros_per_unit)
            .filter(|m| (MIN_MICROS..=MAX_MICROS).contains(m))
            .ok_or(Stop::Unsupported("a timestamp outside years 1-9999", start))
    }

    /// Days from the epoch of a date in `date`'s range.
    fn date(&mut self) -> Result<i64, Stop> {
        let start = self.pos;
        let days = self.long()?;
        if !(1..=MAX_ORDINAL).contains(&days.saturating_add(DAYS_BEFORE_EPOCH)) {
            return Err(Stop::Unsupported("a date outside years 1-9999", start));
        }
        Ok(days)
    }

    /// Microseconds from midnight of a time of day.
    fn time_of_day(&mut self, micros_per_unit: i64) -> Result<i64, Stop> {
        let start = self.pos;
        let micros = self.long()?.saturating_mul(micros_per_unit);
        if !(0..86_400_000_000).contains(&micros) {
            return Err(Stop::Unsupported("a time of day outside 0-24 h", start));
        }
        Ok(micros)
    }

    /// A decimal's sign and digits, when Python writes it unrounded.
    fn decimal(&mut self, precision: usize, scale: u32, fixed: Option<usize>) -> Result<(bool, Vec<u8>), Stop> {
        let start = self.pos;
        let data = match fixed {
            Some(size) => self.take(size, "decimal")?,
            None => self.sized("decimal")?,
        };
        let (negative, digits) = decimal_digits(data);
        if digits.len() > precision || scale > MAX_DECIMAL_SCALE {
            return Err(Stop::Unsupported("a decimal that Python would round", start));
        }
        Ok((negative, digits))
    }

    /// A uuid's text, in the canonical form Python writes back as it is read.
    fn uuid(&mut self) -> Result<&'a [u8], Stop> {
        let start = self.pos;
        let text = self.sized("uuid")?;
        if !is_canonical_uuid(text) {
            return Err(Stop::Unsupported("a uuid not in its canonical form", start));
        }
        Ok(text)
    }

    /// An array or map block's item count (a negative count is followed by the block's size).
    fn block_count(&mut self) -> Result<u64, Stop> {
        let start = self.pos;
        let count = self.long()?;
        if count < 0 {
            self.long()?;
            return count
                .checked_neg()
                .map(|c| c as u64)
                .ok_or_else(|| Stop::Bad("malformed block count".into(), start));
        }
        Ok(count as u64)
    }
}

static ESCAPES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        table[i] = b'u';
        i += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0A] = b'n';
    table[0x0C] = b'f';
    table[0x0D] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// A JSON string as orjson writes it: `"` `\` and control characters escaped, the rest as is.
fn write_string(out: &mut Vec<u8>, text: &[u8]) {
    out.push(b'"');
    let mut start = 0;
    for (i, &byte) in text.iter().enumerate() {
        let escape = ESCAPES[byte as usize];
        if escape == 0 {
            continue;
        }
        out.extend_from_slice(&text[start..i]);
        out.push(b'\\');
        out.push(escape);
        if escape == b'u' {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"00");
            out.push(HEX[(byte >> 4) as usize]);
            out.push(HEX[(byte & 0xF) as usize]);
        }
        start = i + 1;
    }
    out.extend_from_slice(&text[start..]);
    out.push(b'"');
}

fn write_float(out: &mut Vec<u8>, value: f64) {
    if value.is_finite() {
        out.extend_from_slice(zmij::Buffer::new().format_finite(value).as_bytes());
    } else if value.is_nan() {
        out.extend_from_slice(if value.is_sign_negative() { b"\"-NaN\"" } else { b"\"NaN\"" });
    } else if value > 0.0 {
        out.extend_from_slice(b"\"Infinity\"");
    } else {
        out.extend_from_slice(b"\"-Infinity\"");
    }
}

/// `"name":` of an object whose `{` ends at `empty`, after a comma unless it is the first key.
fn write_key(out: &mut Vec<u8>, empty: usize, key: &[u8]) {
    if out.len() > empty {
        out.push(b',');
    }
    out.extend_from_slice(key);
}

fn write_int(out: &mut Vec<u8>, value: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

fn push_digits(out: &mut Vec<u8>, value: i64, width: usize) {
    let text = itoa::Buffer::new().format(value).as_bytes().to_vec();
    for _ in text.len()..width {
        out.push(b'0');
    }
    out.extend_from_slice(&text);
}

/// (year, month, day) of a day count from 1970-01-01 (proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

fn write_date(out: &mut Vec<u8>, days: i64) {
    let (year, month, day) = civil_from_days(days);
    push_digits(out, year, 4);
    out.push(b'-');
    push_digits(out, month, 2);
    out.push(b'-');
    push_digits(out, day, 2);
}

/// `HH:MM:SS` and `.ffffff` when there are microseconds, as Python's isoformat() writes them.
fn write_time(out: &mut Vec<u8>, micros_of_day: i64) {
    let seconds = micros_of_day / 1_000_000;
    push_digits(out, seconds / 3600, 2);
    out.push(b':');
    push_digits(out, seconds / 60 % 60, 2);
    out.push(b':');
    push_digits(out, seconds % 60, 2);
    let micros = micros_of_day % 1_000_000;
    if micros != 0 {
        out.push(b'.');
        push_digits(out, micros, 6);
    }
}

/// The decimal digits of a big-endian two's complement integer, and its sign.
fn decimal_digits(data: &[u8]) -> (bool, Vec<u8>) {
    let negative = data.first().is_some_and(|b| b & 0x80 != 0);
    let mut magnitude: Vec<u8> = data.to_vec();
    if negative {
        // two's complement: invert and add one
        for byte in magnitude.iter_mut() {
            *byte = !*byte;
        }
        for byte in magnitude.iter_mut().rev() {
            let (sum, carry) = byte.overflowing_add(1);
            *byte = sum;
            if !carry {
                break;
            }
        }
    }
    let mut digits = Vec::new();
    let mut limbs: Vec<u8> = magnitude.into_iter().skip_while(|b| *b == 0).collect();
    while !limbs.is_empty() {
        // divide by 10^9, collecting the remainder's nine digits
        let mut remainder: u64 = 0;
        let mut quotient = Vec::with_capacity(limbs.len());
        for byte in &limbs {
            let current = (remainder << 8) | u64::from(*byte);
            let q = current / 1_000_000_000;
            remainder = current % 1_000_000_000;
            if !(quotient.is_empty() && q == 0) {
                quotient.push(q as u8);
            }
        }
        limbs = quotient;
        for _ in 0..9 {
            digits.push(b'0' + (remainder % 10) as u8);
            remainder /= 10;
        }
    }
    while digits.len() > 1 && digits.last() == Some(&b'0') {
        digits.pop();
    }
    if digits.is_empty() {
        digits.push(b'0');
    }
    digits.reverse();
    (negative, digits)
}

/// str(Decimal) of sign, digits and exponent -scale (scale >= 0), as Python writes it.
fn write_decimal(out: &mut Vec<u8>, negative: bool, digits: &[u8], scale: u32) {
    out.push(b'"');
    if negative {
        out.push(b'-');
    }
    let exponent = -i64::from(scale);
    let left = exponent + digits.len() as i64;
    let dot = if left > -6 { left } else { 1 };
    if dot <= 0 {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', (-dot) as usize));
        out.extend_from_slice(digits);
    } else if dot as usize >= digits.len() {
        out.extend_from_slice(digits);
        out.extend(std::iter::repeat_n(b'0', dot as usize - digits.len()));
    } else {
        out.extend_from_slice(&digits[..dot as usize]);
        out.push(b'.');
        out.extend_from_slice(&digits[dot as usize..]);
    }
    if left != dot {
        out.push(b'E');
        let power = left - dot;
        out.push(if power < 0 { b'-' } else { b'+' });
        write_int(out, power.abs());
    }
    out.push(b'"');
}

fn is_canonical_uuid(text: &[u8]) -> bool {
    text.len() == 36
        && text.iter().enumerate().all(|(i, b)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                *b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        })
}

#[pyclass(frozen, module = "kcp.codec.compiled")]
struct Program {
    nodes: Vec<Node>,
    /// With `--fields`, what it keeps of the root (the first) and below; empty without it.
    projections: Vec<Projection>,
    min_size: Vec<u64>, // the fewest bytes a value of each node takes
    bytes_mode: BytesMode,
    max_depth: u32,
    /// Items of a type that takes no bytes (null, an empty record) one array or body may hold:
    /// such counts cannot be checked against the bytes left, and each still writes output.
    max_empty_items: u64,
    /// The output buffer, kept from one call to the next: a new one for each alert costs a
    /// page fault for every 4 kB written (a Rubin alert's JSON is about 2 MB), more than the
    /// copy out of it.
    scratch: Mutex<Vec<u8>>,
}

/// The largest output buffer kept between calls (a bigger one is given back).
const SCRATCH_KEPT: usize = 16 << 20;

impl Program {
    fn value(&self, node: usize, cur: &mut Cursor, out: &mut Vec<u8>, depth: u32) -> Step {
        match &self.nodes[node] {
            Node::Null => out.extend_from_slice(b"null"),
            Node::Boolean => {
                let byte = cur.take(1, "boolean")?[0];
                out.extend_from_slice(if byte != 0 { b"true" } else { b"false" });
            }
            Node::Long => {
                let value = cur.long()?;
                write_int(out, value);
            }
            Node::Float => {
                let raw = cur.take(4, "float")?;
                write_float(out, f64::from(f32::from_le_bytes(raw.try_into().unwrap())));
            }
            Node::Double => {
                let raw = cur.take(8, "double")?;
                write_float(out, f64::from_le_bytes(raw.try_into().unwrap()));
            }
            Node::Bytes => {
                let data = cur.sized("bytes")?;
                self.write_bytes(out, data);
            }
            Node::Fixed(size) => {
                let data = cur.take(*size, "fixed")?;
                self.write_bytes(out, data);
            }
            Node::Str => write_string(out, cur.text("string")?),
            Node::Enum(symbols) => {
                let start = cur.pos;
                let index = cur.long()?;
                out.extend_from_slice(self.pick(symbols, index, start, "enum symbol")?);
            }
            Node::Union(branches) => {
                let start = cur.pos;
                let index = cur.long()?;
                let branch = *self.pick(branches, index, start, "union branch")?;
                self.value(branch, cur, out, depth)?;
            }
            Node::Record(fields) => {
                let depth = self.deeper(depth, cur)?;
                out.push(b'{');
                for (key, field) in fields {
                    out.extend_from_slice(key);
                    self.value(*field, cur, out, depth)?;
                }
                out.push(b'}');
            }
            Node::Array(item) => {
                self.array(cur, *item, out, depth, |cur, out, depth| self.value(*item, cur, out, depth))?;
            }
            Node::Map(values) => {
                let depth = self.deeper(depth, cur)?;
                out.push(b'{');
                let mut keys: HashSet<&[u8]> = HashSet::new();
                let entry_size = self.min_size[*values].saturating_add(1); // a key takes a byte
                self.items(cur, entry_size, |cur, first| {
                    let at = cur.pos;
                    let key = cur.text("map key")?;
                    if !keys.insert(key) {
                        // A Python dict keeps the last value at the first key's place.
                        return Err(Stop::Unsupported("a map holds a key twice", at));
                    }
                    if !first {
                        out.push(b',');
                    }
                    write_string(out, key);
                    out.push(b':');
                    self.value(*values, cur, out, depth)
                })?;
                out.push(b'}');
            }
            Node::Timestamp { micros_per_unit, utc } => {
                let micros = cur.timestamp(*micros_per_unit)?;
                out.push(b'"');
                write_date(out, micros.div_euclid(86_400_000_000));
                out.push(b'T');
                write_time(out, micros.rem_euclid(86_400_000_000));
                if *utc {
                    out.extend_from_slice(b"+00:00");
                }
                out.push(b'"');
            }
            Node::Date => {
                let days = cur.date()?;
                out.push(b'"');
                write_date(out, days);
                out.push(b'"');
            }
            Node::Time { micros_per_unit } => {
                let micros = cur.time_of_day(*micros_per_unit)?;
                out.push(b'"');
                write_time(out, micros);
                out.push(b'"');
            }
            Node::Decimal { precision, scale, fixed } => {
                let (negative, digits) = cur.decimal(*precision, *scale, *fixed)?;
                write_decimal(out, negative, &digits, *scale);
            }
            Node::Uuid => {
                let text = cur.uuid()?;
                out.push(b'"');
                out.extend(text.iter().map(u8::to_ascii_lowercase));
                out.push(b'"');
            }
        }
        Ok(())
    }

    /// Reads past a value `--fields` leaves out, writing nothing, with every check `value`
    /// makes: what the Python path would refuse, or read otherwise, stops the program here too.
    /// Items are skipped one by one even in blocks that give their byte size, as fastavro reads
    /// them: a jump would pass over bytes it refuses (invalid UTF-8, a branch out of range).
    fn skip(&self, node: usize, cur: &mut Cursor, depth: u32) -> Step {
        match &self.nodes[node] {
            Node::Null => {}
            Node::Boolean => {
                cur.take(1, "boolean")?;
            }
            Node::Long => {
                cur.long()?;
            }
            Node::Float => {
                cur.take(4, "float")?;
            }
            Node::Double => {
                cur.take(8, "double")?;
            }
            Node::Bytes => {
                cur.sized("bytes")?;
            }
            Node::Fixed(size) => {
                cur.take(*size, "fixed")?;
            }
            Node::Str => {
                cur.text("string")?;
            }
            Node::Enum(symbols) => {
                let start = cur.pos;
                let index = cur.long()?;
                self.pick(symbols, index, start, "enum symbol")?;
            }
            Node::Union(branches) => {
                let start = cur.pos;
                let index = cur.long()?;
                self.skip(*self.pick(branches, index, start, "union branch")?, cur, depth)?;
            }
            Node::Record(fields) => {
                let depth = self.deeper(depth, cur)?;
                for (_, field) in fields {
                    self.skip(*field, cur, depth)?;
                }
            }
            Node::Array(item) => {
                let depth = self.deeper(depth, cur)?;
                self.items(cur, self.min_size[*item], |cur, _| self.skip(*item, cur, depth))?;
            }
            Node::Map(values) => {
                let depth = self.deeper(depth, cur)?;
                let entry_size = self.min_size[*values].saturating_add(1);
                self.items(cur, entry_size, |cur, _| {
                    cur.text("map key")?;
                    self.skip(*values, cur, depth)
                })?;
            }
            Node::Timestamp { micros_per_unit, .. } => {
                cur.timestamp(*micros_per_unit)?;
            }
            Node::Date => {
                cur.date()?;
            }
            Node::Time { micros_per_unit } => {
                cur.time_of_day(*micros_per_unit)?;
            }
            Node::Decimal { precision, scale, fixed } => {
                cur.decimal(*precision, *scale, *fixed)?;
            }
            Node::Uuid => {
                cur.uuid()?;
            }
        }
        Ok(())
    }

    /// The projection `projection` of the value at `cur` (`--fields`), written.
    fn projected(&self, projection: usize, cur: &mut Cursor, out: &mut Vec<u8>, depth: u32) -> Step {
        match &self.projections[projection] {
            Projection::Record(fields) => {
                let depth = self.deeper(depth, cur)?;
                out.push(b'{');
                let empty = out.len();
                for field in fields {
                    match field {
                        Selected::Skip(node) => self.skip(*node, cur, depth)?,
                        Selected::Whole(key, node) => {
                            write_key(out, empty, key);
                            self.value(*node, cur, out, depth)?;
                        }
                        Selected::Descend(key, projection) => {
                            if let Some(container) = self.container(*projection, cur, depth)? {
                                write_key(out, empty, key);
                                self.projected(container, cur, out, depth)?;
                            }
                        }
                    }
                }
                out.push(b'}');
            }
            Projection::Map { values, keys } => {
                let depth = self.deeper(depth, cur)?;
                out.push(b'{');
                let empty = out.len();
                let mut kept: Vec<&[u8]> = Vec::new();
                let entry_size = self.min_size[*values].saturating_add(1);
                self.items(cur, entry_size, |cur, _| {
                    let at = cur.pos;
                    let key = cur.text("map key")?;
                    let Some((_, projection)) = keys.iter().find(|(name, _)| name == key) else {
                        return self.skip(*values, cur, depth);
                    };
                    if kept.contains(&key) {
                        return Err(Stop::Unsupported("a map holds a key twice", at));
                    }
                    kept.push(key);
                    let mut json_key = Vec::with_capacity(key.len() + 3);
                    write_string(&mut json_key, key);
                    json_key.push(b':');
                    match projection {
                        None => {
                            write_key(out, empty, &json_key);
                            self.value(*values, cur, out, depth)
                        }
                        Some(projection) => match self.container(*projection, cur, depth)? {
                            Some(container) => {
                                write_key(out, empty, &json_key);
                                self.projected(container, cur, out, depth)
                            }
                            None => Ok(()),
                        },
                    }
                })?;
                out.push(b'}');
            }
            Projection::Array { items, each } => {
                self.array(cur, *items, out, depth, |cur, out, depth| self.projected(*each, cur, out, depth))?;
            }
            Projection::Union(branches) => {
                let start = cur.pos;
                let index = cur.long()?;
                self.projected(*self.pick(branches, index, start, "union branch")?, cur, out, depth)?;
            }
            Projection::Absent(node) => {
                self.skip(*node, cur, depth)?;
                out.extend_from_slice(b"null");
            }
        }
        Ok(())
    }

    /// The projection that writes the value at `cur`, its union branches read, when it is a
    /// record, map or array; None, the value skipped, when it is not (its key is then left out).
    fn container(&self, mut projection: usize, cur: &mut Cursor, depth: u32) -> Result<Option<usize>, Stop> {
        loop {
            match &self.projections[projection] {
                Projection::Union(branches) => {
                    let start = cur.pos;
                    let index = cur.long()?;
                    projection = *self.pick(branches, index, start, "union branch")?;
                }
                Projection::Absent(node) => {
                    self.skip(*node, cur, depth)?;
                    return Ok(None);
                }
                _ => return Ok(Some(projection)),
            }
        }
    }

    /// One datum: its JSON, or with `--fields` the projection of a record (or map) datum.
    fn datum(&self, cur: &mut Cursor, out: &mut Vec<u8>) -> Step {
        if self.projections.is_empty() {
            return self.value(0, cur, out, 0);
        }
        let start = cur.pos;
        match self.container(0, cur, 0)? {
            Some(root) if !matches!(self.projections[root], Projection::Array { .. }) => {
                self.projected(root, cur, out, 0)
            }
            // The --fields stage refuses it, in words of its own.
            _ => Err(Stop::Unsupported("--fields of a datum that is not a record", start)),
        }
    }

    /// Each item of an array's or map's blocks, handed to `item` with whether it is the first;
    /// every block's count is checked against the bytes left first.
    /// A JSON array of an Avro array's items (of node `items`), each written by `item`.
    fn array<'a>(
        &self,
        cur: &mut Cursor<'a>,
        items: usize,
        out: &mut Vec<u8>,
        depth: u32,
        mut item: impl FnMut(&mut Cursor<'a>, &mut Vec<u8>, u32) -> Step,
    ) -> Step {
        let depth = self.deeper(depth, cur)?;
        out.push(b'[');
        self.items(cur, self.min_size[items], |cur, first| {
            if !first {
                out.push(b',');
            }
            item(cur, out, depth)
        })?;
        out.push(b']');
        Ok(())
    }

    fn items<'a>(
        &self,
        cur: &mut Cursor<'a>,
        min_size: u64,
        mut item: impl FnMut(&mut Cursor<'a>, bool) -> Step,
    ) -> Step {
        let mut first = true;
        let mut empty_items = 0;
        loop {
            let start = cur.pos;
            let count = cur.block_count()?;
            if count == 0 {
                return Ok(());
            }
            self.check_count(count, min_size, &mut empty_items, cur, start)?;
            for _ in 0..count {
                item(cur, first)?;
                first = false;
            }
        }
    }

    fn write_bytes(&self, out: &mut Vec<u8>, data: &[u8]) {
        match self.bytes_mode {
            BytesMode::Base64 => {
                out.push(b'"');
                let start = out.len();
                out.resize(start + data.len().div_ceil(3) * 4, 0);
                let written = base64::engine::general_purpose::STANDARD
                    .encode_slice(data, &mut out[start..])
                    .expect("the buffer holds the base64 text");
                out.truncate(start + written);
                out.push(b'"');
            }
            BytesMode::Hex => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push(b'"');
                out.reserve(data.len() * 2);
                for byte in data {
                    out.push(HEX[(byte >> 4) as usize]);
                    out.push(HEX[(byte & 0xF) as usize]);
                }
                out.push(b'"');
            }
            BytesMode::Size => write_int(out, data.len() as i64),
            BytesMode::Omit => out.extend_from_slice(b"null"),
        }
    }

    fn pick<'p, T>(&self, items: &'p [T], index: i64, at: usize, what: &str) -> Result<&'p T, Stop> {
        if index < 0 {
            // Python's list indexing counts a negative index from the end.
            return Err(Stop::Unsupported("a negative index", at));
        }
        items
            .get(index as usize)
            .ok_or_else(|| Stop::Bad(format!("{what} index {index} out of range"), at))
    }

    fn deeper(&self, depth: u32, cur: &Cursor) -> Result<u32, Stop> {
        if depth >= self.max_depth {
            return Err(Stop::Bad(
                format!("records nested deeper than {} levels", self.max_depth),
                cur.pos,
            ));
        }
        Ok(depth + 1)
    }

    fn check_count(&self, count: u64, min_size: u64, empty: &mut u64, cur: &Cursor, at: usize) -> Step {
        if min_size == 0 {
            *empty = empty.saturating_add(count);
            if *empty > self.max_empty_items {
                return Err(Stop::Bad(
                    format!(
                        "{count} items of a type that takes no bytes (limit {})",
                        self.max_empty_items
                    ),
                    at,
                ));
            }
        } else if count > cur.remaining() as u64 / min_size {
            return Err(Stop::Truncated(
                format!("block declares {count} items but only {} bytes remain", cur.remaining()),
                at,
            ));
        }
        Ok(())
    }

    /// Up to `count` datums of `body`: the end of each one's JSON in `out`, where reading
    /// stopped, and why it stopped early, if it did.
    fn run(&self, body: &[u8], count: u64, out: &mut Vec<u8>, ends: &mut Vec<usize>) -> (usize, Option<Stop>) {
        let mut cur = Cursor { buf: body, pos: 0 };
        let root_size = self.min_size[0];
        let mut empty = 0;
        if let Err(stop) = self.check_count(count, root_size, &mut empty, &cur, 0) {
            return (0, Some(stop));
        }
        for _ in 0..count {
            if let Err(stop) = self.datum(&mut cur, out) {
                return (cur.pos, Some(stop));
            }
            ends.push(out.len());
        }
        (cur.pos, None)
    }
}

fn compute_min_sizes(nodes: &[Node]) -> Vec<u64> {
    // A fixpoint from 0 upward: recursive types get a lower bound, which is all a check needs.
    let mut sizes = vec![0u64; nodes.len()];
    for _ in 0..64 {
        let mut changed = false;
        for (i, node) in nodes.iter().enumerate() {
            let size = match node {
                Node::Null => 0,
                Node::Float => 4,
                Node::Double => 8,
                Node::Fixed(n) => *n as u64,
                Node::Decimal { fixed: Some(n), .. } => *n as u64,
                Node::Record(fields) => fields.iter().fold(0u64, |s, (_, f)| s.saturating_add(sizes[*f])),
                Node::Union(branches) => {
                    1 + branches.iter().map(|b| sizes[*b]).min().unwrap_or(0)
                }
                _ => 1,
            }
            .min(1 << 32);
            if size != sizes[i] {
                sizes[i] = size;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    sizes
}

/// `numbers[i]` as the index of one of `count` nodes.
fn index_below(numbers: &[i64], i: usize, count: usize) -> PyResult<usize> {
    numbers
        .get(i)
        .copied()
        .filter(|n| *n >= 0 && (*n as usize) < count)
        .map(|n| n as usize)
        .ok_or_else(|| PyValueError::new_err("op refers to no node"))
}

/// The projections of `Program::new`'s `projection` ops, over `nodes` value nodes.
fn compile_projections(ops: &[(String, Vec<i64>, Vec<String>)], nodes: usize) -> PyResult<Vec<Projection>> {
    let count = ops.len();
    let node = |numbers: &[i64], i: usize| index_below(numbers, i, nodes);
    let projection = |numbers: &[i64], i: usize| index_below(numbers, i, count);
    let key = |name: &str| {
        let mut json = Vec::with_capacity(name.len() + 3);
        write_string(&mut json, name.as_bytes());
        json.push(b':');
        json
    };
    let mut projections = Vec::with_capacity(count);
    for (kind, numbers, names) in ops {
        projections.push(match kind.as_str() {
            "record" => {
                if numbers.len() != 2 * names.len() {
                    return Err(PyValueError::new_err("record projection: fields and actions differ"));
                }
                let mut fields = Vec::with_capacity(names.len());
                for (i, name) in names.iter().enumerate() {
                    fields.push(match numbers[2 * i] {
                        0 => Selected::Skip(node(numbers, 2 * i + 1)?),
                        1 => Selected::Whole(key(name), node(numbers, 2 * i + 1)?),
                        2 => Selected::Descend(key(name), projection(numbers, 2 * i + 1)?),
                        _ => return Err(PyValueError::new_err("record projection: unknown action")),
                    });
                }
                Projection::Record(fields)
            }
            "map" => {
                if numbers.len() != names.len() + 1 {
                    return Err(PyValueError::new_err("map projection: keys and projections differ"));
                }
                let mut keys = Vec::with_capacity(names.len());
                for (i, name) in names.iter().enumerate() {
                    let kept = if numbers[i + 1] == -1 { None } else { Some(projection(numbers, i + 1)?) };
                    keys.push((name.as_bytes().to_vec(), kept));
                }
                Projection::Map { values: node(numbers, 0)?, keys }
            }
            "array" => Projection::Array { items: node(numbers, 0)?, each: projection(numbers, 1)? },
            "union" => Projection::Union((0..numbers.len()).map(|i| projection(numbers, i)).collect::<PyResult<_>>()?),
            "absent" => Projection::Absent(node(numbers, 0)?),
            other => return Err(PyValueError::new_err(format!("unknown projection {other}"))),
        });
    }
    Ok(projections)
}

#[pymethods]
impl Program {
    /// `ops`: (kind, numbers, names) for each node, the root first; children by index.
    /// `projection`: with `--fields`, the ops of what it keeps, the root's first (see
    /// `projections`): "record" (numbers: 0 skip, 1 whole or 2 descend, and the node or
    /// projection, for each field named), "map" (the values' node, then for each key named its
    /// projection or -1 for whole), "array" (the items' node and their projection), "union"
    /// (each branch's projection), "absent" (the node skipped).
    #[new]
    #[pyo3(signature = (ops, bytes_mode, max_depth, max_empty_items, projection = Vec::new()))]
    fn new(
        ops: Vec<(String, Vec<i64>, Vec<String>)>,
        bytes_mode: &str,
        max_depth: u32,
        max_empty_items: u64,
        projection: Vec<(String, Vec<i64>, Vec<String>)>,
    ) -> PyResult<Self> {
        let bytes_mode = match bytes_mode {
            "base64" => BytesMode::Base64,
            "hex" => BytesMode::Hex,
            "size" => BytesMode::Size,
            "omit" => BytesMode::Omit,
            other => return Err(PyValueError::new_err(format!("unknown bytes mode {other}"))),
        };
        let count = ops.len();
        let child = |numbers: &[i64], i: usize| index_below(numbers, i, count);
        let mut nodes = Vec::with_capacity(count);
        for (kind, numbers, names) in &ops {
            nodes.push(match kind.as_str() {
                "null" => Node::Null,
                "boolean" => Node::Boolean,
                "int" | "long" => Node::Long,
                "float" => Node::Float,
                "double" => Node::Double,
                "bytes" => Node::Bytes,
                "string" => Node::Str,
                "fixed" => Node::Fixed(
                    usize::try_from(numbers.first().copied().unwrap_or(-1))
                        .map_err(|_| PyValueError::new_err("fixed needs its size"))?,
                ),
                "enum" => Node::Enum(
                    names
                        .iter()
                        .map(|s| {
                            let mut json = Vec::new();
                            write_string(&mut json, s.as_bytes());
                            json
                        })
                        .collect(),
                ),
                "array" => Node::Array(child(numbers, 0)?),
                "map" => Node::Map(child(numbers, 0)?),
                "record" => {
                    if names.len() != numbers.len() {
                        return Err(PyValueError::new_err("record fields and types differ"));
                    }
                    let mut fields = Vec::with_capacity(names.len());
                    for (i, name) in names.iter().enumerate() {
                        let mut key = if i == 0 { Vec::new() } else { vec![b','] };
                        write_string(&mut key, name.as_bytes());
                        key.push(b':');
                        fields.push((key, child(numbers, i)?));
                    }
                    Node::Record(fields)
                }
                "union" => Node::Union((0..numbers.len()).map(|i| child(numbers, i)).collect::<PyResult<_>>()?),
                "timestamp-millis" | "timestamp-micros" | "local-timestamp-millis" | "local-timestamp-micros" => {
                    Node::Timestamp {
                        micros_per_unit: if kind.ends_with("millis") { 1000 } else { 1 },
                        utc: !kind.starts_with("local"),
                    }
                }
                "date" => Node::Date,
                "time-millis" => Node::Time { micros_per_unit: 1000 },
                "time-micros" => Node::Time { micros_per_unit: 1 },
                "decimal" => {
                    let number = |i: usize| numbers.get(i).copied().unwrap_or(-1);
                    let (precision, scale, size) = (number(0), number(1), number(2));
                    if precision < 1 || scale < 0 {
                        return Err(PyValueError::new_err("decimal needs precision >= 1, scale >= 0"));
                    }
                    Node::Decimal {
                        precision: precision as usize,
                        scale: u32::try_from(scale).unwrap_or(u32::MAX),
                        fixed: usize::try_from(size).ok(),
                    }
                }
                "uuid" => Node::Uuid,
                other => return Err(PyValueError::new_err(format!("unknown op {other}"))),
            });
        }
        if nodes.is_empty() {
            return Err(PyValueError::new_err("an empty program"));
        }
        let min_size = compute_min_sizes(&nodes);
        let projections = compile_projections(&projection, count)?;
        Ok(Program {
            nodes,
            projections,
            min_size,
            bytes_mode,
            max_depth,
            max_empty_items,
            scratch: Mutex::new(Vec::new()),
        })
    }

    /// (documents, end, problem): the JSON of each datum read from `body` (at most `count`),
    /// the byte where reading stopped, and None or (kind, message, byte) when it stopped early:
    /// kind "bad" for a malformed body, "truncated" for one that ends before its values do,
    /// "unsupported" for a body the Python path must write.
    #[allow(clippy::type_complexity)]
    fn transcode<'py>(
        &self,
        py: Python<'py>,
        body: &[u8],
        count: u64,
    ) -> (Vec<Bound<'py, PyBytes>>, usize, Option<(&'static str, String, usize)>) {
        // Another thread using the buffer (never kcp's own): this call makes its own.
        let out = self.scratch.try_lock().map(|mut kept| std::mem::take(&mut *kept));
        let out = out.unwrap_or_default();
        let (mut out, ends, end, stop) = py.allow_threads(move || {
            catch_unwind(AssertUnwindSafe(move || {
                let mut out = out;
                // JSON of alerts runs 1.4x (cutouts) to 6x (float histories) the Avro size.
                out.reserve(body.len() * 4 + 1024);
                let mut ends = Vec::new();
                let (end, stop) = self.run(body, count, &mut out, &mut ends);
                (out, ends, end, stop)
            }))
            .unwrap_or_else(|_| {
                let stop = Stop::Bad("internal error of the native transcoder".into(), 0);
                (Vec::new(), Vec::new(), 0, Some(stop))
            })
        });
        let mut documents = Vec::with_capacity(ends.len());
        let mut start = 0;
        for stop_at in ends {
            documents.push(PyBytes::new(py, &out[start..stop_at]));
            start = stop_at;
        }
        if out.capacity() <= SCRATCH_KEPT {
            out.clear();
            if let Ok(mut kept) = self.scratch.try_lock() {
                *kept = out;
            }
        }
        let problem = stop.map(|s| match s {
            Stop::Bad(message, at) => ("bad", message, at),
            Stop::Truncated(message, at) => ("truncated", message, at),
            Stop::Unsupported(why, at) => ("unsupported", why.to_string(), at),
        });
        (documents, end, problem)
    }
}

#[pymodule]
fn compiled(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<Program>()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_as_python_writes_them() {
        let cases: &[(&[u8], u32, &str)] = &[
            (&[0x01, 0x00], 2, "\"2.56\""),
            (&[0xFF], 0, "\"-1\""),
            (&[], 3, "\"0.000\""),
            (&[0x01], 9, "\"1E-9\""),
            (&[0x7B], 1, "\"12.3\""),
        ];
        for (data, scale, expected) in cases {
            let (negative, digits) = decimal_digits(data);
            let mut out = Vec::new();
            write_decimal(&mut out, negative, &digits, *scale);
            assert_eq!(String::from_utf8(out).unwrap(), *expected);
        }
    }

    #[test]
    fn dates_around_the_epoch() {
        let mut out = Vec::new();
        write_date(&mut out, -719_162);
        assert_eq!(out, b"0001-01-01");
        out.clear();
        write_date(&mut out, 17_737);
        assert_eq!(out, b"2018-07-25");
    }
}
