//! A minimal reader of Python pickles (protocols 0-5, the data opcodes), enough for the
//! python versions of CIFAR-10/100: dicts, lists, strings, bytes, ints and numpy arrays.
//!
//! Nothing is executed: globals are recorded by name, and only a few reductions are
//! interpreted (`numpy.core.multiarray._reconstruct` + its `BUILD` state as an array,
//! `numpy.dtype`, and `_codecs.encode(text, "latin1")` as bytes, which Python 3 writes for bytes
//! under protocol 2).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::error::{Error, Result};

/// A numpy array: shape, dtype code without byte order (`u1`, `i8`, `f4`, ...), and its bytes
/// in C order, little-endian.
#[derive(Debug, Clone, PartialEq)]
pub struct NdArray {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Type code, e.g. `u1` (uint8) or `i8` (int64).
    pub dtype: String,
    /// Raw little-endian element bytes.
    pub data: Vec<u8>,
}

/// A decoded pickle value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer that fits `i64`.
    Int(i64),
    /// A float.
    Float(f64),
    /// `bytes` (or a Python 2 `str`).
    Bytes(Vec<u8>),
    /// `str` (Python 2 `unicode`).
    Text(String),
    /// A list.
    List(Vec<Value>),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A dict, in insertion order.
    Dict(Vec<(Value, Value)>),
    /// A numpy array.
    Array(NdArray),
    /// Any other object: the class or function that made it, its arguments, its state.
    Object {
        /// `module.name` of the callable.
        class: String,
        /// Arguments of the call.
        args: Vec<Value>,
        /// State set by `BUILD`.
        state: Option<Box<Value>>,
    },
}

impl Value {
    /// Whether this is the text `key`, as `str` or `bytes`.
    pub fn is_text(&self, key: &str) -> bool {
        match self {
            Value::Text(t) => t == key,
            Value::Bytes(b) => b == key.as_bytes(),
            _ => false,
        }
    }

    /// The entry of a dict whose key is `key` (as `str` or `bytes`).
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(entries) => entries.iter().find(|(k, _)| k.is_text(key)).map(|(_, v)| v),
            _ => None,
        }
    }

    /// This value as a numpy array.
    pub fn ndarray(&self) -> Result<NdArray> {
        match self {
            Value::Array(a) => Ok(a.clone()),
            other => Err(Error::Invalid(format!("expected a numpy array, found {}", other.kind()))),
        }
    }

    /// This value as a list of integers (a list, a tuple, or an integer numpy array).
    pub fn int_list(&self) -> Result<Vec<i64>> {
        match self {
            Value::List(items) | Value::Tuple(items) => items
                .iter()
                .map(|v| match v {
                    Value::Int(i) => Ok(*i),
                    other => Err(Error::Invalid(format!("expected integers, found {}", other.kind()))),
                })
                .collect(),
            Value::Array(a) => {
                let width = match a.dtype.as_str() {
                    "u1" | "i1" => 1,
                    "u2" | "i2" => 2,
                    "u4" | "i4" => 4,
                    "u8" | "i8" => 8,
                    other => {
                        return Err(Error::Invalid(format!("expected an integer array, found dtype {other}")));
                    }
                };
                let signed = a.dtype.starts_with('i');
                Ok(a.data
                    .chunks_exact(width)
                    .map(|b| {
                        let mut buf = [0u8; 8];
                        buf[..width].copy_from_slice(b);
                        if signed && b[width - 1] & 0x80 != 0 {
                            buf[width..].fill(0xff);
                        }
                        i64::from_le_bytes(buf)
                    })
                    .collect())
            }
            other => Err(Error::Invalid(format!("expected a list of integers, found {}", other.kind()))),
        }
    }

    /// This value as a list of strings (each `str` or `bytes`).
    pub fn string_list(&self) -> Result<Vec<String>> {
        match self {
            Value::List(items) | Value::Tuple(items) => items
                .iter()
                .map(|v| match v {
                    Value::Text(t) => Ok(t.clone()),
                    Value::Bytes(b) => Ok(String::from_utf8_lossy(b).into_owned()),
                    other => Err(Error::Invalid(format!("expected strings, found {}", other.kind()))),
                })
                .collect(),
            other => Err(Error::Invalid(format!("expected a list of strings, found {}", other.kind()))),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "a bool",
            Value::Int(_) => "an int",
            Value::Float(_) => "a float",
            Value::Bytes(_) => "bytes",
            Value::Text(_) => "a str",
            Value::List(_) => "a list",
            Value::Tuple(_) => "a tuple",
            Value::Dict(_) => "a dict",
            Value::Array(_) => "a numpy array",
            Value::Object { .. } => "an object",
        }
    }
}

/// A value on the VM's stack or memo; lists, dicts and objects are shared so that memoised
/// references see later mutations.
#[derive(Debug, Clone)]
enum Item {
    Mark,
    Leaf(Rc<Value>),
    List(Rc<RefCell<Vec<Item>>>),
    Tuple(Rc<Vec<Item>>),
    Dict(Rc<RefCell<Vec<(Item, Item)>>>),
    Global(Rc<str>),
    Object(Rc<RefCell<Obj>>),
}

#[derive(Debug)]
struct Obj {
    class: String,
    args: Vec<Item>,
    state: Option<Item>,
}

fn bad(msg: impl Into<String>) -> Error {
    Error::Invalid(format!("not a valid pickle: {}", msg.into()))
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.bytes.len() - self.pos {
            return Err(bad(format!("truncated: {n} bytes needed at offset {}", self.pos)));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<usize> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")) as usize)
    }

    fn u64(&mut self) -> Result<usize> {
        let v = u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes"));
        usize::try_from(v).map_err(|_| bad("length too large"))
    }

    fn line(&mut self) -> Result<&'a str> {
        let rest = &self.bytes[self.pos..];
        let end = rest.iter().position(|&b| b == b'\n').ok_or_else(|| bad("unterminated text line"))?;
        self.pos += end + 1;
        std::str::from_utf8(&rest[..end]).map_err(|_| bad("text line is not UTF-8"))
    }
}

fn leaf(v: Value) -> Item {
    Item::Leaf(Rc::new(v))
}

fn text(bytes: &[u8]) -> Result<Item> {
    Ok(leaf(Value::Text(String::from_utf8(bytes.to_vec()).map_err(|_| bad("str is not UTF-8"))?)))
}

/// Parses a pickle and returns its top-level value.
pub fn load(bytes: &[u8]) -> Result<Value> {
    let mut m = Machine { r: Reader { bytes, pos: 0 }, stack: Vec::new(), memo: HashMap::new() };
    loop {
        let op = m.r.u8()?;
        if op == b'.' {
            // STOP
            return resolve(&m.pop()?, 0);
        }
        m.step(op)?;
    }
}

/// The pickle machine: the opcode stream, the stack and the memo.
struct Machine<'a> {
    r: Reader<'a>,
    stack: Vec<Item>,
    memo: HashMap<usize, Item>,
}

impl Machine<'_> {
    fn pop(&mut self) -> Result<Item> {
        self.stack.pop().ok_or_else(|| bad("stack underflow"))
    }

    fn top(&self) -> Result<Item> {
        self.stack.last().cloned().ok_or_else(|| bad("stack underflow"))
    }

    /// The items above the topmost MARK, with the MARK removed.
    fn pop_mark(&mut self) -> Result<Vec<Item>> {
        let m = self.stack.iter().rposition(|i| matches!(i, Item::Mark)).ok_or_else(|| bad("missing MARK"))?;
        let items = self.stack.split_off(m + 1);
        self.stack.pop();
        Ok(items)
    }

    /// Runs one opcode (any but STOP).
    fn step(&mut self, op: u8) -> Result<()> {
        if let Some(item) = self.constant(op)? {
            self.stack.push(item);
            return Ok(());
        }
        match op {
            0x80 => {
                self.r.u8()?; // PROTO
            }
            0x95 => {
                self.r.take(8)?; // FRAME
            }
            b'(' => self.stack.push(Item::Mark),
            b'0' => {
                self.pop()?;
            }
            b'2' => {
                let top = self.top()?;
                self.stack.push(top)
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'q' | b'r' | b'p' | 0x94 | b'h' | b'j' | b'g' => self.memo_op(op)?,
            b'a' | b'e' | b's' | b'u' | b'l' | b'd' | b't' | 0x85..=0x87 => self.container_op(op)?,
            b'c' | 0x93 | b'R' | 0x81 | b'b' => self.object_op(op)?,
            other => {
                return Err(bad(format!("unsupported opcode 0x{other:02x} at offset {}", self.r.pos - 1)));
            }
        }
        Ok(())
    }

    /// The value an opcode that pushes a constant (read from the stream) pushes; `None` for any
    /// other opcode.
    fn constant(&mut self, op: u8) -> Result<Option<Item>> {
        let r = &mut self.r;
        let item = match op {
            b'}' => Item::Dict(Rc::new(RefCell::new(Vec::new()))),
            b']' => Item::List(Rc::new(RefCell::new(Vec::new()))),
            b')' => Item::Tuple(Rc::new(Vec::new())),
            b'N' => leaf(Value::None),
            0x88 => leaf(Value::Bool(true)),
            0x89 => leaf(Value::Bool(false)),
            b'K' => leaf(Value::Int(r.u8()? as i64)),
            b'M' => leaf(Value::Int(u16::from_le_bytes(r.take(2)?.try_into().expect("2 bytes")) as i64)),
            b'J' => leaf(Value::Int(i32::from_le_bytes(r.take(4)?.try_into().expect("4 bytes")) as i64)),
            0x8a | 0x8b => {
                let n = if op == 0x8a { r.u8()? as usize } else { r.u32()? };
                let b = r.take(n)?;
                if n > 8 {
                    return Err(bad("integer wider than 64 bits"));
                }
                let mut buf = [0u8; 8];
                buf[..n].copy_from_slice(b);
                if n > 0 && b[n - 1] & 0x80 != 0 {
                    buf[n..].fill(0xff);
                }
                leaf(Value::Int(i64::from_le_bytes(buf)))
            }
            b'I' | b'L' => {
                let line = r.line()?.trim_end_matches('L');
                leaf(match line {
                    "00" => Value::Bool(false),
                    "01" => Value::Bool(true),
                    _ => Value::Int(line.parse().map_err(|_| bad(format!("bad integer `{line}`")))?),
                })
            }
            b'G' => leaf(Value::Float(f64::from_be_bytes(r.take(8)?.try_into().expect("8 bytes")))),
            b'U' | b'C' => {
                let n = r.u8()? as usize;
                leaf(Value::Bytes(r.take(n)?.to_vec()))
            }
            b'T' | b'B' => {
                let n = r.u32()?;
                leaf(Value::Bytes(r.take(n)?.to_vec()))
            }
            0x8e => {
                let n = r.u64()?;
                leaf(Value::Bytes(r.take(n)?.to_vec()))
            }
            0x8c => {
                let n = r.u8()? as usize;
                text(r.take(n)?)?
            }
            b'X' => {
                let n = r.u32()?;
                text(r.take(n)?)?
            }
            0x8d => {
                let n = r.u64()?;
                text(r.take(n)?)?
            }
            _ => return Ok(None),
        };
        Ok(Some(item))
    }

    /// PUT, BINPUT, LONG_BINPUT, MEMOIZE and the GETs.
    fn memo_op(&mut self, op: u8) -> Result<()> {
        match op {
            b'h' | b'j' | b'g' => {
                let i = match op {
                    b'h' => self.r.u8()? as usize,
                    b'j' => self.r.u32()?,
                    _ => self.r.line()?.parse().map_err(|_| bad("bad GET index"))?,
                };
                let item = self.memo.get(&i).cloned().ok_or_else(|| bad(format!("memo {i} is empty")))?;
                self.stack.push(item);
            }
            _ => {
                let i = match op {
                    b'q' => self.r.u8()? as usize,
                    b'r' => self.r.u32()?,
                    b'p' => self.r.line()?.parse().map_err(|_| bad("bad PUT index"))?,
                    _ => self.memo.len(), // MEMOIZE
                };
                let top = self.top()?;
                self.memo.insert(i, top);
            }
        }
        Ok(())
    }

    /// Building lists, dicts and tuples.
    fn container_op(&mut self, op: u8) -> Result<()> {
        match op {
            b'a' => {
                let v = self.pop()?;
                match self.stack.last() {
                    Some(Item::List(l)) => l.borrow_mut().push(v),
                    _ => return Err(bad("APPEND without a list")),
                }
            }
            b'e' => {
                let items = self.pop_mark()?;
                match self.stack.last() {
                    Some(Item::List(l)) => l.borrow_mut().extend(items),
                    _ => return Err(bad("APPENDS without a list")),
                }
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                match self.stack.last() {
                    Some(Item::Dict(d)) => d.borrow_mut().push((k, v)),
                    _ => return Err(bad("SETITEM without a dict")),
                }
            }
            b'u' => {
                let items = self.pop_mark()?;
                if items.len() % 2 != 0 {
                    return Err(bad("SETITEMS with an odd number of items"));
                }
                match self.stack.last() {
                    Some(Item::Dict(d)) => {
                        let mut d = d.borrow_mut();
                        let mut it = items.into_iter();
                        while let (Some(k), Some(v)) = (it.next(), it.next()) {
                            d.push((k, v));
                        }
                    }
                    _ => return Err(bad("SETITEMS without a dict")),
                }
            }
            b'l' => {
                let items = self.pop_mark()?;
                self.stack.push(Item::List(Rc::new(RefCell::new(items))))
            }
            b'd' => {
                let items = self.pop_mark()?;
                if items.len() % 2 != 0 {
                    return Err(bad("DICT with an odd number of items"));
                }
                let pairs = items.chunks(2).map(|c| (c[0].clone(), c[1].clone())).collect();
                self.stack.push(Item::Dict(Rc::new(RefCell::new(pairs))))
            }
            b't' => {
                let items = self.pop_mark()?;
                self.stack.push(Item::Tuple(Rc::new(items)))
            }
            _ => {
                // TUPLE1..TUPLE3
                let n = (op - 0x84) as usize;
                if self.stack.len() < n {
                    return Err(bad("stack underflow"));
                }
                let items = self.stack.split_off(self.stack.len() - n);
                if items.iter().any(|i| matches!(i, Item::Mark)) {
                    return Err(bad("MARK inside a tuple"));
                }
                self.stack.push(Item::Tuple(Rc::new(items)))
            }
        }
        Ok(())
    }

    /// GLOBAL, STACK_GLOBAL, REDUCE, NEWOBJ and BUILD.
    fn object_op(&mut self, op: u8) -> Result<()> {
        match op {
            b'c' => {
                let module = self.r.line()?.to_string();
                let name = self.r.line()?;
                self.stack.push(Item::Global(format!("{module}.{name}").into()))
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                match (resolve(&module, 0)?, resolve(&name, 0)?) {
                    (Value::Text(m), Value::Text(n)) => self.stack.push(Item::Global(format!("{m}.{n}").into())),
                    _ => return Err(bad("STACK_GLOBAL needs two strings")),
                }
            }
            b'R' | 0x81 => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let Item::Tuple(args) = args else {
                    return Err(bad("call arguments are not a tuple"));
                };
                let class = match callable {
                    Item::Global(g) => g.to_string(),
                    _ => return Err(bad("call of something that is not a global")),
                };
                self.stack.push(reduce(class, args.to_vec())?)
            }
            _ => {
                // BUILD
                let state = self.pop()?;
                match self.stack.last() {
                    Some(Item::Object(o)) => o.borrow_mut().state = Some(state),
                    Some(_) => {} // state of a plain value: ignored
                    None => return Err(bad("BUILD without an object")),
                }
            }
        }
        Ok(())
    }
}

/// Interprets the few calls a data pickle needs; records any other call as an object.
fn reduce(class: String, args: Vec<Item>) -> Result<Item> {
    if class == "_codecs.encode"
        && let Some(Value::Text(t)) = args.first().map(|a| resolve(a, 0)).transpose()?
    {
        let bytes: Option<Vec<u8>> = t.chars().map(|c| u8::try_from(c as u32).ok()).collect();
        return bytes.map(|b| leaf(Value::Bytes(b))).ok_or_else(|| bad("_codecs.encode of non-latin1 text"));
    }
    Ok(Item::Object(Rc::new(RefCell::new(Obj { class, args, state: None }))))
}

/// Turns a VM item into a plain value; numpy arrays and dtypes become [`Value::Array`] and text.
/// The most values and bytes one pickle may expand to: memo references can share a value many
/// times, so a few hundred bytes could otherwise describe terabytes.
const MAX_VALUES: usize = 5_000_000;
const MAX_BYTES: usize = 8 << 30;

fn resolve(item: &Item, depth: usize) -> Result<Value> {
    Resolver { values_left: MAX_VALUES, bytes_left: MAX_BYTES }.resolve(item, depth)
}

/// Turns stack items into values within a budget of values and bytes.
struct Resolver {
    values_left: usize,
    bytes_left: usize,
}

impl Resolver {
    fn spend(&mut self, bytes: usize) -> Result<()> {
        self.values_left = self.values_left.checked_sub(1).ok_or_else(|| bad("expands to too many values"))?;
        self.bytes_left = self.bytes_left.checked_sub(bytes).ok_or_else(|| bad("expands to too many bytes"))?;
        Ok(())
    }

    fn resolve(&mut self, item: &Item, depth: usize) -> Result<Value> {
        if depth > 200 {
            return Err(bad("nested too deeply"));
        }
        let bytes = match item {
            Item::Leaf(v) => match &**v {
                Value::Bytes(b) => b.len(),
                Value::Text(t) => t.len(),
                _ => 0,
            },
            _ => 0,
        };
        self.spend(bytes)?;
        let d = depth + 1;
        Ok(match item {
            Item::Mark => return Err(bad("MARK left on the stack")),
            Item::Leaf(v) => (**v).clone(),
            Item::List(l) => Value::List(l.borrow().iter().map(|i| self.resolve(i, d)).collect::<Result<_>>()?),
            Item::Tuple(t) => Value::Tuple(t.iter().map(|i| self.resolve(i, d)).collect::<Result<_>>()?),
            Item::Dict(dict) => Value::Dict(
                dict.borrow()
                    .iter()
                    .map(|(k, v)| Ok((self.resolve(k, d)?, self.resolve(v, d)?)))
                    .collect::<Result<_>>()?,
            ),
            Item::Global(g) => Value::Object { class: g.to_string(), args: Vec::new(), state: None },
            Item::Object(o) => {
                let o = o.borrow();
                let args: Vec<Value> = o.args.iter().map(|i| self.resolve(i, d)).collect::<Result<_>>()?;
                let state = o.state.as_ref().map(|s| self.resolve(s, d)).transpose()?;
                if o.class.ends_with("multiarray._reconstruct") {
                    Value::Array(ndarray_from_state(state.as_ref())?)
                } else {
                    Value::Object { class: o.class.clone(), args, state: state.map(Box::new) }
                }
            }
        })
    }
}

/// Builds an array from numpy's pickled state `(version, shape, dtype, fortran, data)`.
fn ndarray_from_state(state: Option<&Value>) -> Result<NdArray> {
    let Some(Value::Tuple(parts)) = state else {
        return Err(bad("numpy array without state"));
    };
    let [_, shape, dtype, fortran, data] = parts.as_slice() else {
        return Err(bad("numpy array state is not a 5-tuple"));
    };
    let shape: Vec<usize> = shape
        .int_list()?
        .into_iter()
        .map(|d| usize::try_from(d).map_err(|_| bad("negative array dimension")))
        .collect::<Result<_>>()?;
    if matches!(fortran, Value::Bool(true) | Value::Int(1)) && shape.len() > 1 {
        return Err(bad("Fortran-ordered arrays are not supported"));
    }
    let Value::Object { class, args, state } = dtype else {
        return Err(bad("numpy array without a dtype"));
    };
    if !class.ends_with("dtype") {
        return Err(bad("numpy array dtype is not a numpy.dtype"));
    }
    let code = match args.first() {
        Some(Value::Text(t)) => t.clone(),
        Some(Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
        _ => return Err(bad("numpy dtype without a type code")),
    };
    let big_endian = matches!(state.as_deref(), Some(Value::Tuple(s)) if s.get(1).is_some_and(|o| o.is_text(">")));
    let width: usize = code
        .get(1..)
        .and_then(|w| w.parse().ok())
        .filter(|&w| w > 0)
        .ok_or_else(|| bad(format!("unsupported dtype `{code}`")))?;
    let mut bytes = match data {
        Value::Bytes(b) => b.clone(),
        Value::Text(t) => t.chars().map(|c| c as u32 as u8).collect(),
        _ => return Err(bad("numpy array data is not bytes")),
    };
    let count: usize = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| bad("array too large"))?;
    if count.checked_mul(width) != Some(bytes.len()) {
        return Err(bad(format!(
            "array of shape {shape:?} and dtype {code} needs {} bytes, has {}",
            count.saturating_mul(width),
            bytes.len()
        )));
    }
    if big_endian && width > 1 {
        for chunk in bytes.chunks_exact_mut(width) {
            chunk.reverse();
        }
    }
    Ok(NdArray { shape, dtype: code, data: bytes })
}
