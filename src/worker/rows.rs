//! Rows as blocks: how a micro-batch of rows is stored in a job, and its
//! outputs in the job's result ([`RowBlock`]); what a model sees of them
//! ([`Batch`], a [`TensorView`] of the whole batch) and what it gives
//! back ([`Outputs`]).
//!
//! A block is one contiguous buffer for all its rows, so a job costs one
//! allocation and one copy however many rows it holds, and a model that
//! takes tensors hands the batch to its runtime as one:
//! - **tensor**: rows of numbers of one width (a scalar `f32`, a `Vec<f32>`
//!   of 64 features; any of the [`Element`] types), stored rows × width,
//!   little-endian, with no per-row framing;
//! - **packed**: any other row type, each row encoded by the one codec
//!   ([`super::codec`]) and laid end to end, with one end offset per row.
//!
//! Invariants (checked by [`RowBlock::check`] on every block read from a
//! queue, so a damaged or foreign block is an error, never a panic):
//! - a tensor block holds exactly `rows × width × size` bytes;
//! - a packed block has one end offset per row, never decreasing, the last
//!   equal to its length.

use std::any::{Any, TypeId};
use std::borrow::Cow;
use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::codec::{self, CodecError};
use super::ModelError;

/// The element type of a tensor block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Elem {
    /// `f32`
    F32,
    /// `f64`
    F64,
    /// `i8`
    I8,
    /// `i16`
    I16,
    /// `i32`
    I32,
    /// `i64`
    I64,
    /// `u8`
    U8,
    /// `u16`
    U16,
    /// `u32`
    U32,
    /// `u64`
    U64,
}

impl Elem {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Elem::I8 | Elem::U8 => 1,
            Elem::I16 | Elem::U16 => 2,
            Elem::F32 | Elem::I32 | Elem::U32 => 4,
            Elem::F64 | Elem::I64 | Elem::U64 => 8,
        }
    }
}

mod sealed {
    pub trait Sealed {}
}

/// A number a tensor block can hold: `f32`, `f64`, `i8` to `i64`, `u8`
/// to `u64`. Rows of one of these, or `Vec`s of one of these all of one
/// length, are stored as a tensor.
pub trait Element: Copy + Send + Sync + std::fmt::Debug + 'static + sealed::Sealed {
    /// Its tag in a block.
    const ELEM: Elem;

    /// `bytes` (little-endian) as elements: borrowed when the host is
    /// little-endian and the bytes are aligned, else copied.
    #[doc(hidden)]
    fn from_le(bytes: &[u8]) -> Cow<'_, [Self]>;

    /// Append `values` to `out`, little-endian.
    #[doc(hidden)]
    fn extend_le(values: &[Self], out: &mut Vec<u8>);
}

macro_rules! elements {
    ($($t:ty => $tag:ident),* $(,)?) => {$(
        impl sealed::Sealed for $t {}
        impl Element for $t {
            const ELEM: Elem = Elem::$tag;

            fn from_le(bytes: &[u8]) -> Cow<'_, [Self]> {
                if cfg!(target_endian = "little") {
                    match bytemuck::try_cast_slice::<u8, $t>(bytes) {
                        Ok(s) => Cow::Borrowed(s),
                        Err(_) => Cow::Owned(bytemuck::pod_collect_to_vec(bytes)),
                    }
                } else {
                    Cow::Owned(
                        bytes
                            .chunks_exact(std::mem::size_of::<$t>())
                            .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunks of the size")))
                            .collect(),
                    )
                }
            }

            fn extend_le(values: &[Self], out: &mut Vec<u8>) {
                if cfg!(target_endian = "little") {
                    out.extend_from_slice(bytemuck::cast_slice(values));
                } else {
                    for v in values {
                        out.extend_from_slice(&v.to_le_bytes());
                    }
                }
            }
        }
    )*};
}

elements!(
    f32 => F32, f64 => F64, i8 => I8, i16 => I16, i32 => I32, i64 => I64,
    u8 => U8, u16 => U16, u32 => U32, u64 => U64,
);

/// How a block lays out its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Layout {
    /// `width` elements per row, rows end to end; each row one `Vec` of
    /// them (`vector`) or one number (width 1).
    Tensor {
        elem: Elem,
        width: u32,
        vector: bool,
    },
    /// Each row encoded by the codec, with its end offset in `ends`.
    Packed,
}

/// A micro-batch of rows (or of outputs) in one buffer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RowBlock {
    layout: Layout,
    rows: u32,
    /// Packed only: the end of each row in `data`.
    ends: Vec<u32>,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

impl RowBlock {
    /// An empty block of `layout`.
    fn empty(layout: Layout) -> RowBlock {
        RowBlock {
            layout,
            rows: 0,
            ends: Vec::new(),
            data: Vec::new(),
        }
    }

    /// A block of no rows.
    pub fn none() -> RowBlock {
        RowBlock::empty(Layout::Packed)
    }

    /// `rows` as a block: a tensor when their type is an [`Element`] or a
    /// `Vec` of one whose rows all have one length, else packed.
    pub fn encode<T: Serialize + 'static>(rows: &[T]) -> Result<RowBlock, CodecError> {
        if let Some(block) = tensor_from(rows) {
            return Ok(block);
        }
        let mut block = RowBlock::empty(Layout::Packed);
        block.ends.reserve(rows.len());
        for r in rows {
            codec::encode_into(r, &mut block.data)?;
            block.push_end()?;
        }
        Ok(block)
    }

    /// Close the packed row written last.
    fn push_end(&mut self) -> Result<(), CodecError> {
        let end = u32::try_from(self.data.len())
            .map_err(|_| CodecError::Encode("a block of rows over 4 GiB".into()))?;
        self.ends.push(end);
        self.rows += 1;
        Ok(())
    }

    /// `rows` rows of `width` elements each, row after row in `values`, as
    /// a tensor block (one copy). `None` when `values` is not
    /// `rows × width` long or either count is over `u32::MAX`.
    #[cfg_attr(not(feature = "arrow"), allow(dead_code))]
    pub fn from_elements<E: Element>(rows: usize, width: usize, values: &[E]) -> Option<RowBlock> {
        if rows.checked_mul(width)? != values.len() {
            return None;
        }
        let mut data = Vec::with_capacity(values.len() * E::ELEM.size());
        E::extend_le(values, &mut data);
        Some(RowBlock {
            layout: Layout::Tensor {
                elem: E::ELEM,
                width: u32::try_from(width).ok()?,
                vector: true,
            },
            rows: u32::try_from(rows).ok()?,
            ends: Vec::new(),
            data,
        })
    }

    /// Rows in the block.
    pub fn len(&self) -> usize {
        self.rows as usize
    }

    /// Bytes of its rows.
    pub fn byte_len(&self) -> usize {
        self.data.len() + self.ends.len() * 4
    }

    /// Bytes of row `i`, as stored (its element bytes, or its encoding).
    pub fn row_bytes(&self, i: usize) -> &[u8] {
        match self.layout {
            Layout::Tensor { elem, width, .. } => {
                let n = width as usize * elem.size();
                &self.data[i * n..(i + 1) * n]
            }
            Layout::Packed => {
                let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
                &self.data[start..self.ends[i] as usize]
            }
        }
    }

    /// The largest row, in bytes.
    pub fn largest_row(&self) -> usize {
        (0..self.len())
            .map(|i| self.row_bytes(i).len())
            .max()
            .unwrap_or(0)
    }

    /// Rows `start..end` as a block of their own.
    pub fn slice(&self, start: usize, end: usize) -> RowBlock {
        match self.layout {
            Layout::Tensor { elem, width, .. } => {
                let n = width as usize * elem.size();
                RowBlock {
                    layout: self.layout,
                    rows: (end - start) as u32,
                    ends: Vec::new(),
                    data: self.data[start * n..end * n].to_vec(),
                }
            }
            Layout::Packed => {
                let base = if start == 0 { 0 } else { self.ends[start - 1] };
                let stop = if end == 0 { 0 } else { self.ends[end - 1] };
                RowBlock {
                    layout: Layout::Packed,
                    rows: (end - start) as u32,
                    ends: self.ends[start..end].iter().map(|e| e - base).collect(),
                    data: self.data[base as usize..stop as usize].to_vec(),
                }
            }
        }
    }

    /// Whether `other`'s rows can be appended to this block's.
    pub fn same_layout(&self, other: &RowBlock) -> bool {
        self.layout == other.layout
    }

    /// These blocks' rows in one block: of their layout when they share
    /// one, else packed (tensors of several widths, say, from rows run
    /// alone).
    pub fn concat(blocks: &[&RowBlock]) -> RowBlock {
        let Some(first) = blocks.first() else {
            return RowBlock::empty(Layout::Packed);
        };
        if blocks.iter().any(|b| !b.same_layout(first)) {
            let packed: Vec<RowBlock> = blocks.iter().map(|b| b.to_packed()).collect();
            return RowBlock::concat(&packed.iter().collect::<Vec<_>>());
        }
        let mut out = RowBlock::empty(first.layout);
        out.data
            .reserve(blocks.iter().map(|b| b.data.len()).sum::<usize>());
        for b in blocks {
            let base = out.data.len() as u32;
            out.data.extend_from_slice(&b.data);
            out.ends.extend(b.ends.iter().map(|e| e + base));
            out.rows += b.rows;
        }
        out
    }

    /// The rows packed: each row as the codec encodes its value (a number
    /// as its little-endian bytes, a `Vec` as its length then its
    /// elements), so a packed block decodes to the same values.
    pub fn to_packed(&self) -> RowBlock {
        let Layout::Tensor { width, vector, .. } = self.layout else {
            return self.clone();
        };
        let mut out = RowBlock::empty(Layout::Packed);
        out.ends.reserve(self.len());
        for i in 0..self.len() {
            if vector {
                out.data.extend_from_slice(&u64::from(width).to_le_bytes());
            }
            out.data.extend_from_slice(self.row_bytes(i));
            out.ends.push(out.data.len() as u32);
            out.rows += 1;
        }
        out
    }

    /// Keep only the rows where `keep` is true.
    pub fn select(&self, keep: &[bool]) -> RowBlock {
        let mut out = RowBlock::empty(self.layout);
        for (i, _) in keep.iter().enumerate().filter(|(_, k)| **k) {
            out.data.extend_from_slice(self.row_bytes(i));
            if self.layout == Layout::Packed {
                out.ends.push(out.data.len() as u32);
            }
            out.rows += 1;
        }
        out
    }

    /// Check the block's invariants (see the module docs): a block read
    /// from a queue is trusted only after this.
    pub fn check(&self) -> Result<(), CodecError> {
        let bad = |why: &str| Err(CodecError::Decode(format!("a damaged row block: {why}")));
        match self.layout {
            Layout::Tensor { elem, width, .. } => {
                let want = (self.rows as u64) * u64::from(width) * elem.size() as u64;
                if !self.ends.is_empty() || want != self.data.len() as u64 {
                    return bad("its size does not match its rows");
                }
            }
            Layout::Packed => {
                if self.ends.len() != self.rows as usize {
                    return bad("one end offset per row is missing");
                }
                if self.ends.windows(2).any(|w| w[0] > w[1])
                    || self.ends.last().map_or(0, |&e| e as usize) != self.data.len()
                {
                    return bad("its row offsets are out of order");
                }
            }
        }
        Ok(())
    }

    /// The rows as values of `T`.
    ///
    /// # Errors
    /// A row that does not decode as `T`, or a tensor of another element
    /// type than `T`'s.
    pub fn decode<T: DeserializeOwned + 'static>(&self) -> Result<Vec<T>, CodecError> {
        match self.layout {
            Layout::Packed => (0..self.len())
                .map(|i| codec::decode::<T>(self.row_bytes(i)))
                .collect(),
            Layout::Tensor {
                elem,
                width,
                vector,
            } => tensor_rows::<T>(self, elem, width as usize, vector).unwrap_or_else(|| {
                Err(CodecError::Decode(format!(
                    "a tensor of {elem:?} × {width} cannot be read as {}",
                    std::any::type_name::<T>()
                )))
            }),
        }
    }

    /// The block as one tensor of `E` (rows × width), if it is one.
    pub fn tensor<E: Element>(&self) -> Option<TensorView<'_, E>> {
        match self.layout {
            Layout::Tensor { elem, width, .. } if elem == E::ELEM => Some(TensorView {
                rows: self.len(),
                width: width as usize,
                data: E::from_le(&self.data),
            }),
            _ => None,
        }
    }

    /// Feed the block's layout and bytes to `eat` (for content hashes).
    pub fn hash_with(&self, mut eat: impl FnMut(&[u8])) {
        let layout = match self.layout {
            Layout::Tensor {
                elem,
                width,
                vector,
            } => [1, elem as u8, u8::from(vector), 0]
                .into_iter()
                .chain(width.to_le_bytes())
                .collect::<Vec<u8>>(),
            Layout::Packed => vec![2],
        };
        eat(&layout);
        eat(&self.rows.to_le_bytes());
        for e in &self.ends {
            eat(&e.to_le_bytes());
        }
        eat(&self.data);
    }
}

/// `rows` as a tensor block, when `T` is an [`Element`] or a `Vec` of one
/// with every row of one length.
fn tensor_from<T: 'static>(rows: &[T]) -> Option<RowBlock> {
    macro_rules! try_elements {
        ($($e:ty),*) => {$(
            if let Some(b) = scalars::<T, $e>(rows).or_else(|| vectors::<T, $e>(rows)) {
                return Some(b);
            }
        )*};
    }
    try_elements!(f32, f64, i8, i16, i32, i64, u8, u16, u32, u64);
    None
}

/// Rows that are `E`s.
fn scalars<T: 'static, E: Element>(rows: &[T]) -> Option<RowBlock> {
    if TypeId::of::<T>() != TypeId::of::<E>() {
        return None;
    }
    let values: Vec<E> = rows
        .iter()
        .filter_map(|r| (r as &dyn Any).downcast_ref::<E>().copied())
        .collect();
    let mut data = Vec::with_capacity(values.len() * E::ELEM.size());
    E::extend_le(&values, &mut data);
    Some(RowBlock {
        layout: Layout::Tensor {
            elem: E::ELEM,
            width: 1,
            vector: false,
        },
        rows: u32::try_from(rows.len()).ok()?,
        ends: Vec::new(),
        data,
    })
}

/// `r` as a slice of `E`, when `T` is `Vec<E>`.
fn row<T: 'static, E: Element>(r: &T) -> Option<&[E]> {
    (r as &dyn Any).downcast_ref::<Vec<E>>().map(|v| &v[..])
}

/// Rows that are `Vec<E>`s all of one length.
fn vectors<T: 'static, E: Element>(rows: &[T]) -> Option<RowBlock> {
    if TypeId::of::<T>() != TypeId::of::<Vec<E>>() || rows.is_empty() {
        return None;
    }
    let width = row::<T, E>(&rows[0])?.len();
    if rows
        .iter()
        .any(|r| row::<T, E>(r).map(<[E]>::len) != Some(width))
    {
        return None;
    }
    let mut data = Vec::with_capacity(rows.len() * width * E::ELEM.size());
    for r in rows {
        E::extend_le(row::<T, E>(r)?, &mut data);
    }
    Some(RowBlock {
        layout: Layout::Tensor {
            elem: E::ELEM,
            width: u32::try_from(width).ok()?,
            vector: true,
        },
        rows: u32::try_from(rows.len()).ok()?,
        ends: Vec::new(),
        data,
    })
}

/// A tensor block's rows as `T`s, when `T` is its element or a `Vec` of
/// it; `None` for any other `T`.
fn tensor_rows<T: 'static>(
    block: &RowBlock,
    elem: Elem,
    width: usize,
    vector: bool,
) -> Option<Result<Vec<T>, CodecError>> {
    macro_rules! try_elements {
        ($($e:ty),*) => {$(
            if elem == <$e>::ELEM {
                return typed_rows::<T, $e>(block, width, vector);
            }
        )*};
    }
    try_elements!(f32, f64, i8, i16, i32, i64, u8, u16, u32, u64);
    None
}

fn typed_rows<T: 'static, E: Element>(
    block: &RowBlock,
    width: usize,
    vector: bool,
) -> Option<Result<Vec<T>, CodecError>> {
    let values = E::from_le(&block.data);
    if TypeId::of::<T>() == TypeId::of::<E>() && !vector {
        if width != 1 {
            return Some(Err(CodecError::Decode(format!(
                "rows of {width} numbers cannot be read as single numbers"
            ))));
        }
        return Some(Ok(cast_vec::<E, T>(values.into_owned())));
    }
    if TypeId::of::<T>() == TypeId::of::<Vec<E>>() && vector {
        let rows: Vec<Vec<E>> = if width == 0 {
            vec![Vec::new(); block.len()]
        } else {
            values.chunks_exact(width).map(<[E]>::to_vec).collect()
        };
        return Some(Ok(cast_vec::<Vec<E>, T>(rows)));
    }
    None
}

/// `v` as a `Vec<T>`, where `A` and `T` are one type (checked by the
/// callers through their `TypeId`s).
fn cast_vec<A: 'static, T: 'static>(v: Vec<A>) -> Vec<T> {
    let boxed: Box<dyn Any> = Box::new(v);
    match boxed.downcast::<Vec<T>>() {
        Ok(v) => *v,
        // The callers compare TypeIds first: this is unreachable.
        Err(_) => unreachable!("cast_vec between two types"),
    }
}

/// A batch as one tensor: `rows` × `width` elements, row after row.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorView<'a, E: Element> {
    rows: usize,
    width: usize,
    data: Cow<'a, [E]>,
}

impl<E: Element> TensorView<'_, E> {
    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Elements per row.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Every element, row after row (`rows × width`).
    pub fn as_slice(&self) -> &[E] {
        &self.data
    }

    /// Row `i`.
    ///
    /// # Panics
    /// When `i` is not below [`TensorView::rows`].
    pub fn row(&self, i: usize) -> &[E] {
        &self.data[i * self.width..(i + 1) * self.width]
    }
}

/// A micro-batch of rows as a model sees it: as a tensor
/// ([`Batch::tensor`]), when its rows are numbers of one width, or as
/// rows of the model's input type ([`Batch::rows`], decoded on first use).
pub struct Batch<'a, I> {
    block: Cow<'a, RowBlock>,
    decoded: OnceLock<Result<Vec<I>, String>>,
}

impl<I> std::fmt::Debug for Batch<'_, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("rows", &self.block.len())
            .field("layout", &self.block.layout)
            .finish()
    }
}

impl<I: Serialize + DeserializeOwned + 'static> Batch<'_, I> {
    /// A batch of `rows` (to call a model's
    /// [`infer_batch`](super::Model::infer_batch) directly).
    ///
    /// # Errors
    /// A row the codec cannot encode.
    pub fn from_rows(rows: &[I]) -> Result<Batch<'static, I>, CodecError> {
        Ok(Batch {
            block: Cow::Owned(RowBlock::encode(rows)?),
            decoded: OnceLock::new(),
        })
    }
}

impl<'a, I: DeserializeOwned + 'static> Batch<'a, I> {
    pub(crate) fn of(block: &'a RowBlock) -> Batch<'a, I> {
        Batch {
            block: Cow::Borrowed(block),
            decoded: OnceLock::new(),
        }
    }

    /// Rows in the batch.
    pub fn len(&self) -> usize {
        self.block.len()
    }

    /// Whether the batch has no rows.
    pub fn is_empty(&self) -> bool {
        self.block.len() == 0
    }

    /// The batch as one tensor of `E`, rows × width, when its rows are
    /// `E`s or `Vec<E>`s of one length; else `None`. No copy when the
    /// host is little-endian and the block is aligned.
    pub fn tensor<E: Element>(&self) -> Option<TensorView<'_, E>> {
        self.block.tensor::<E>()
    }

    /// The rows as the model's input type (decoded once, on first use).
    ///
    /// # Errors
    /// A row that does not decode as `I`: a [`ModelError::permanent`].
    pub fn rows(&self) -> Result<&[I], ModelError> {
        match self
            .decoded
            .get_or_init(|| self.block.decode::<I>().map_err(|e| e.to_string()))
        {
            Ok(rows) => Ok(rows),
            Err(e) => Err(ModelError::permanent(format!("undecodable row: {e}"))),
        }
    }
}

/// What a model gives back for a batch: one output per row, in order, as
/// values ([`Outputs::rows`]) or as one tensor ([`Outputs::tensor`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Outputs<O> {
    inner: Inner<O>,
}

#[derive(Debug, Clone, PartialEq)]
enum Inner<O> {
    Rows(Vec<O>),
    Block(RowBlock),
}

impl<O: Serialize + DeserializeOwned + 'static> Outputs<O> {
    /// One output per row.
    pub fn rows(outputs: Vec<O>) -> Outputs<O> {
        Outputs {
            inner: Inner::Rows(outputs),
        }
    }

    /// `rows` outputs of `width` elements each, row after row in `data`:
    /// for an output type that is `E` (width 1) or `Vec<E>`.
    ///
    /// # Errors
    /// A permanent [`ModelError`] when `data` is not `rows × width` long,
    /// or the output type is neither `E` nor `Vec<E>`.
    pub fn tensor<E: Element>(
        rows: usize,
        width: usize,
        data: Vec<E>,
    ) -> Result<Outputs<O>, ModelError> {
        let t = TypeId::of::<O>();
        let fits = t == TypeId::of::<Vec<E>>() || (t == TypeId::of::<E>() && width == 1);
        if !fits {
            return Err(ModelError::permanent(format!(
                "a tensor of {:?} cannot be the output type {}",
                E::ELEM,
                std::any::type_name::<O>()
            )));
        }
        if rows.checked_mul(width) != Some(data.len()) {
            return Err(ModelError::permanent(format!(
                "a tensor of {} elements is not {rows} rows of {width}",
                data.len()
            )));
        }
        let (Ok(rows), Ok(width)) = (u32::try_from(rows), u32::try_from(width)) else {
            return Err(ModelError::permanent("a tensor over 2^32 rows or columns"));
        };
        let mut bytes = Vec::with_capacity(data.len() * E::ELEM.size());
        E::extend_le(&data, &mut bytes);
        Ok(Outputs {
            inner: Inner::Block(RowBlock {
                layout: Layout::Tensor {
                    elem: E::ELEM,
                    width,
                    vector: t == TypeId::of::<Vec<E>>(),
                },
                rows,
                ends: Vec::new(),
                data: bytes,
            }),
        })
    }

    /// Outputs given.
    pub fn len(&self) -> usize {
        match &self.inner {
            Inner::Rows(r) => r.len(),
            Inner::Block(b) => b.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The outputs as values (decoding a tensor).
    ///
    /// # Errors
    /// A tensor that does not decode as `O`.
    pub fn into_rows(self) -> Result<Vec<O>, CodecError> {
        match self.inner {
            Inner::Rows(r) => Ok(r),
            Inner::Block(b) => b.decode(),
        }
    }

    /// The outputs as a block, to store.
    pub(crate) fn into_block(self) -> Result<RowBlock, CodecError> {
        match self.inner {
            Inner::Rows(r) => RowBlock::encode(&r),
            Inner::Block(b) => Ok(b),
        }
    }
}

/// The rows of `block` given to `model`, through its batch view: the
/// outputs as a block of as many rows.
pub(crate) fn run_block<M: super::Model>(
    model: &M,
    block: &RowBlock,
) -> Result<RowBlock, ModelError> {
    let batch = Batch::<M::Input>::of(block);
    let outputs = model.infer_batch(&batch)?;
    if outputs.len() != block.len() {
        return Err(ModelError::permanent(format!(
            "model returned {} outputs for {} rows",
            outputs.len(),
            block.len()
        )));
    }
    outputs
        .into_block()
        .map_err(|e| ModelError::permanent(format!("cannot store the output: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_of_one_width_are_tensors_and_round_trip() {
        let rows = vec![vec![1.0f32, 2.0], vec![3.0, 4.0], vec![5.0, 6.0]];
        let b = RowBlock::encode(&rows).unwrap();
        assert_eq!(
            b.layout,
            Layout::Tensor {
                elem: Elem::F32,
                width: 2,
                vector: true,
            }
        );
        b.check().unwrap();
        assert_eq!(b.decode::<Vec<f32>>().unwrap(), rows);
        let t = b.tensor::<f32>().unwrap();
        assert_eq!((t.rows(), t.width()), (3, 2));
        assert_eq!(t.as_slice(), &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(t.row(1), &[3.0, 4.0]);
        assert!(b.tensor::<f64>().is_none());
        // Slices, concatenations and selections keep rows whole.
        let s = b.slice(1, 3);
        assert_eq!(s.decode::<Vec<f32>>().unwrap(), rows[1..]);
        let c = RowBlock::concat(&[&b.slice(0, 1), &s]);
        assert_eq!(c, b);
        let k = b.select(&[true, false, true]);
        assert_eq!(
            k.decode::<Vec<f32>>().unwrap(),
            vec![rows[0].clone(), rows[2].clone()]
        );
    }

    #[test]
    fn scalars_ragged_rows_and_other_types() {
        let b = RowBlock::encode(&[7u64, 8, 9]).unwrap();
        assert!(matches!(b.layout, Layout::Tensor { width: 1, .. }));
        assert_eq!(b.decode::<u64>().unwrap(), vec![7, 8, 9]);
        // Read as another type: refused, no panic.
        assert!(b.decode::<u32>().is_err());
        assert!(b.decode::<String>().is_err());
        let ragged = vec![vec![1.0f64], vec![2.0, 3.0]];
        let r = RowBlock::encode(&ragged).unwrap();
        assert_eq!(r.layout, Layout::Packed);
        assert_eq!(r.decode::<Vec<f64>>().unwrap(), ragged);
        let strings = vec!["a".to_string(), "bcd".into(), String::new()];
        let s = RowBlock::encode(&strings).unwrap();
        s.check().unwrap();
        assert_eq!(s.decode::<String>().unwrap(), strings);
        assert_eq!(s.slice(1, 3).decode::<String>().unwrap(), strings[1..]);
        assert_eq!(
            s.select(&[false, true, true]).decode::<String>().unwrap(),
            strings[1..]
        );
        let empty = RowBlock::encode::<Vec<f32>>(&[]).unwrap();
        assert_eq!(empty.decode::<Vec<f32>>().unwrap(), Vec::<Vec<f32>>::new());
    }

    #[test]
    fn blocks_of_other_layouts_concatenate_packed() {
        let a = RowBlock::encode(&[vec![1.0f32, 2.0]]).unwrap();
        let b = RowBlock::encode(&[vec![3.0f32, 4.0, 5.0]]).unwrap();
        let c = RowBlock::concat(&[&a, &b]);
        c.check().unwrap();
        assert_eq!(
            c.decode::<Vec<f32>>().unwrap(),
            vec![vec![1.0, 2.0], vec![3.0, 4.0, 5.0]]
        );
        // A packed tensor row is the codec's own encoding of the value.
        let one = RowBlock::encode(&[vec![7u16, 8]]).unwrap().to_packed();
        assert_eq!(one.row_bytes(0), codec::encode(&vec![7u16, 8]).unwrap());
        let s = RowBlock::encode(&[9.5f64]).unwrap().to_packed();
        assert_eq!(s.row_bytes(0), codec::encode(&9.5f64).unwrap());
        // A number and a one-number vector are told apart.
        let n = RowBlock::encode(&[3u32]).unwrap();
        assert!(n.decode::<Vec<u32>>().is_err());
        let v = RowBlock::encode(&[vec![3u32]]).unwrap();
        assert!(v.decode::<u32>().is_err());
        assert!(!n.same_layout(&v));
    }

    #[test]
    fn damaged_blocks_are_refused() {
        let mut b = RowBlock::encode(&[vec![1u8, 2], vec![3, 4]]).unwrap();
        b.data.pop();
        assert!(b.check().is_err());
        let mut p = RowBlock::encode(&["x".to_string(), "yz".into()]).unwrap();
        p.ends[0] = 1000;
        assert!(p.check().is_err());
        p.ends.pop();
        assert!(p.check().is_err());
    }

    #[test]
    fn tensor_outputs_check_their_type_and_shape() {
        let o = Outputs::<Vec<f32>>::tensor(2, 2, vec![1.0f32, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(
            o.clone().into_rows().unwrap(),
            vec![vec![1.0, 2.0], vec![3.0, 4.0]]
        );
        assert_eq!(o.into_block().unwrap().len(), 2);
        assert!(Outputs::<Vec<f32>>::tensor(2, 2, vec![1.0f32]).is_err());
        assert!(Outputs::<Vec<f64>>::tensor(1, 1, vec![1.0f32]).is_err());
        assert!(Outputs::<f32>::tensor(1, 2, vec![1.0f32, 2.0]).is_err());
        assert_eq!(
            Outputs::<f32>::tensor(2, 1, vec![1.0f32, 2.0])
                .unwrap()
                .into_rows()
                .unwrap(),
            vec![1.0, 2.0]
        );
    }

    #[test]
    fn batches_decode_rows_once_and_give_tensors() {
        let rows = vec![vec![1i64, 2, 3]];
        let batch = Batch::from_rows(&rows).unwrap();
        assert_eq!(batch.len(), 1);
        assert_eq!(batch.rows().unwrap(), &rows[..]);
        assert_eq!(batch.tensor::<i64>().unwrap().as_slice(), &[1, 2, 3]);
        let strings = Batch::from_rows(&["s".to_string()]).unwrap();
        assert!(strings.tensor::<u8>().is_none());
    }
}
