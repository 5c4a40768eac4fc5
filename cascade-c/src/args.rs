//! Checked conversions of the raw arguments C hands over: a null or misaligned pointer,
//! a length no allocation can have, or text that is not UTF-8 becomes an
//! `InvalidInput` failure naming the argument, never undefined behaviour the library
//! could have detected.

use std::ffi::{CStr, c_char};
use std::fmt::Display;
use std::mem::MaybeUninit;

use crate::error::{CResult, Failure};

fn null(what: &(impl Display + ?Sized)) -> Failure {
    Failure::invalid(format!("{what} is NULL"))
}

fn checked<T>(ptr: *const T, what: &(impl Display + ?Sized)) -> CResult {
    if ptr.is_null() {
        return Err(null(what));
    }
    if !ptr.is_aligned() {
        return Err(Failure::invalid(format!(
            "{what} is not aligned to {} bytes",
            align_of::<T>()
        )));
    }
    Ok(())
}

fn checked_len<T>(len: usize, what: &(impl Display + ?Sized)) -> CResult {
    if len
        .checked_mul(size_of::<T>().max(1))
        .is_none_or(|b| b > isize::MAX as usize)
    {
        return Err(Failure::invalid(format!(
            "{what}: length {len} is larger than any buffer"
        )));
    }
    Ok(())
}

/// The value behind a required pointer.
///
/// # Safety
/// `ptr` is NULL or points to a valid `T` that nothing writes for `'a`.
pub unsafe fn read<'a, T>(ptr: *const T, what: &(impl Display + ?Sized)) -> CResult<&'a T> {
    checked(ptr, what)?;
    // SAFETY: non-null and aligned (checked); validity is the caller's contract.
    Ok(unsafe { &*ptr })
}

/// A required output location, possibly uninitialised: only ever written.
///
/// # Safety
/// `ptr` is NULL or points to memory valid for writing a `T` that nothing else uses
/// for `'a`.
pub unsafe fn out<'a, T>(
    ptr: *mut T,
    what: &(impl Display + ?Sized),
) -> CResult<&'a mut MaybeUninit<T>> {
    checked(ptr.cast_const(), what)?;
    // SAFETY: non-null and aligned (checked); MaybeUninit asks nothing of the contents;
    // exclusivity is the caller's contract.
    Ok(unsafe { &mut *ptr.cast::<MaybeUninit<T>>() })
}

/// Checks an optional output location (NULL means "not wanted").
///
/// # Safety
/// As [`out`] when `ptr` is not NULL.
pub unsafe fn out_opt<'a, T>(
    ptr: *mut T,
    what: &(impl Display + ?Sized),
) -> CResult<Option<&'a mut MaybeUninit<T>>> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: forwarded contract.
    unsafe { out(ptr, what) }.map(Some)
}

/// `len` elements at `ptr`; NULL is accepted only for `len == 0`.
///
/// # Safety
/// Unless `len == 0`, `ptr` points to `len` initialised `T`s that nothing writes for `'a`.
pub unsafe fn slice<'a, T>(
    ptr: *const T,
    len: usize,
    what: &(impl Display + ?Sized),
) -> CResult<&'a [T]> {
    if len == 0 {
        return Ok(&[]);
    }
    checked(ptr, what)?;
    checked_len::<T>(len, what)?;
    // SAFETY: non-null, aligned, length bounded (checked); validity is the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// A caller's byte buffer of `len` bytes at `ptr`; NULL is accepted only for `len == 0`.
///
/// # Safety
/// Unless `len == 0`, `ptr` points to `len` writable bytes which nothing else uses for
/// `'a`.
pub unsafe fn bytes_mut<'a>(
    ptr: *mut u8,
    len: usize,
    what: &(impl Display + ?Sized),
) -> CResult<&'a mut [u8]> {
    if len == 0 {
        return Ok(&mut []);
    }
    checked(ptr.cast_const(), what)?;
    checked_len::<u8>(len, what)?;
    // SAFETY: non-null, length bounded (checked); exclusivity is the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
}

/// `len` output elements at `ptr`, possibly uninitialised: only ever written. NULL is
/// accepted only for `len == 0`.
///
/// # Safety
/// Unless `len == 0`, `ptr` points to memory valid for writing `len` `T`s, which nothing
/// else uses for `'a`.
pub unsafe fn out_slice<'a, T>(
    ptr: *mut T,
    len: usize,
    what: &(impl Display + ?Sized),
) -> CResult<&'a mut [MaybeUninit<T>]> {
    if len == 0 {
        return Ok(&mut []);
    }
    checked(ptr.cast_const(), what)?;
    checked_len::<T>(len, what)?;
    // SAFETY: non-null, aligned, length bounded (checked); MaybeUninit asks nothing of
    // the contents; exclusivity is the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr.cast::<MaybeUninit<T>>(), len) })
}

/// A required NUL-terminated UTF-8 string.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string that nothing writes for `'a`.
pub unsafe fn text<'a>(ptr: *const c_char, what: &(impl Display + ?Sized)) -> CResult<&'a str> {
    if ptr.is_null() {
        return Err(null(what));
    }
    // SAFETY: non-null; termination and lifetime are the caller's contract.
    let raw = unsafe { CStr::from_ptr(ptr) };
    raw.to_str()
        .map_err(|e| Failure::invalid(format!("{what} is not UTF-8: {e}")))
}

/// An optional NUL-terminated UTF-8 string: NULL and `""` are both "not set".
///
/// # Safety
/// As [`text`] when `ptr` is not NULL.
pub unsafe fn text_opt<'a>(
    ptr: *const c_char,
    what: &(impl Display + ?Sized),
) -> CResult<Option<&'a str>> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: forwarded contract.
    let value = unsafe { text(ptr, what) }?;
    Ok((!value.is_empty()).then_some(value))
}
