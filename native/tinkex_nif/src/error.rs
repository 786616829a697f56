//! Core errors as `%TinkexNative.Error{}` structs, built here so that every
//! message the NIF sends (`sample_async/4`'s replies included, which no
//! Elixir code touches on the way) carries the documented struct.

use rustler::{Encoder, Env, MapIterator, Term, TermType};
use tinkex_core::error::{Category, Error, ErrorKind};

use crate::atoms;

fn kind_atom(k: ErrorKind) -> rustler::Atom {
    match k {
        ErrorKind::Transport => atoms::transport(),
        ErrorKind::Timeout => atoms::timeout(),
        ErrorKind::Http => atoms::http(),
        ErrorKind::Expired => atoms::expired(),
        ErrorKind::RequestFailed => atoms::request_failed(),
        ErrorKind::Decode => atoms::decode(),
        ErrorKind::Stuck => atoms::stuck(),
        ErrorKind::Validation => atoms::validation(),
        ErrorKind::Cancelled => atoms::cancelled(),
        ErrorKind::Internal => atoms::internal(),
    }
}

/// The kind named by an atom (the inverse of the encoding), for configs.
pub fn kind_of(name: &str) -> Option<ErrorKind> {
    Some(match name {
        "transport" => ErrorKind::Transport,
        "timeout" => ErrorKind::Timeout,
        "http" => ErrorKind::Http,
        "expired" => ErrorKind::Expired,
        "request_failed" => ErrorKind::RequestFailed,
        "decode" => ErrorKind::Decode,
        "stuck" => ErrorKind::Stuck,
        "validation" => ErrorKind::Validation,
        "cancelled" => ErrorKind::Cancelled,
        "internal" => ErrorKind::Internal,
        _ => return None,
    })
}

fn category_atom(c: Category) -> rustler::Atom {
    match c {
        Category::User => atoms::user(),
        Category::Server => atoms::server(),
        Category::Unknown => atoms::unknown(),
    }
}

mod names {
    rustler::atoms! {
        struct_key = "__struct__",
        exception_key = "__exception__",
        module = "Elixir.TinkexNative.Error",
        kind = "type",
        category,
        status,
        message,
        request_id,
        retryable = "retryable?",
        retry_after_ms,
    }
}

/// Encodes a core error as a `%TinkexNative.Error{}` (the struct
/// `defexception` defines: its fields plus `__exception__: true`).
pub fn encode<'a>(env: Env<'a>, e: &Error) -> Term<'a> {
    let nil = atoms::nil().encode(env);
    let category = e.category.map_or(nil, |c| category_atom(c).encode(env));
    let status = e.status.map_or(nil, |s| s.encode(env));
    let request_id = e.request_id.as_deref().map_or(nil, |r| r.encode(env));
    let retry_after_ms = e.retry_after_ms.map_or(nil, |ms| ms.encode(env));
    let keys = [
        names::struct_key().encode(env),
        names::exception_key().encode(env),
        names::kind().encode(env),
        names::category().encode(env),
        names::status().encode(env),
        names::message().encode(env),
        names::request_id().encode(env),
        names::retryable().encode(env),
        names::retry_after_ms().encode(env),
    ];
    let values = [
        names::module().encode(env),
        true.encode(env),
        kind_atom(e.kind).encode(env),
        category,
        status,
        e.message.encode(env),
        request_id,
        e.retryable.encode(env),
        retry_after_ms,
    ];
    // Distinct atom keys: building the map cannot fail.
    Term::map_from_term_arrays(env, &keys, &values).unwrap_or(nil)
}

/// Decodes a structured argument (a `NifMap` or `NifTaggedEnum`) so that a
/// term of the wrong shape raises `ArgumentError`, like every other bad
/// argument: the derived decoders raise an `ErlangError` with a string
/// instead.
pub fn decode_arg<'a, T: rustler::Decoder<'a>>(term: Term<'a>) -> rustler::NifResult<T> {
    if !lists_proper(term, 0) {
        return Err(rustler::Error::BadArg);
    }
    term.decode().map_err(|_| rustler::Error::BadArg)
}

/// Whether every list in `term` (down to the depth our decoders read) is
/// proper: rustler's `Vec` decoder panics on an improper list.
fn lists_proper(term: Term<'_>, depth: u32) -> bool {
    if depth > 8 {
        return true; // deeper than any argument's shape: never decoded
    }
    match term.get_type() {
        TermType::List => {
            let mut rest = term;
            while !rest.is_empty_list() {
                match rest.list_get_cell() {
                    Ok((head, tail)) if lists_proper(head, depth + 1) => rest = tail,
                    _ => return false,
                }
            }
            true
        }
        TermType::Tuple => rustler::types::tuple::get_tuple(term).map_or(true, |items| {
            items.iter().all(|t| lists_proper(*t, depth + 1))
        }),
        TermType::Map => MapIterator::new(term).is_none_or(|mut entries| {
            entries.all(|(k, v)| lists_proper(k, depth + 1) && lists_proper(v, depth + 1))
        }),
        _ => true,
    }
}

/// `{:error, %TinkexNative.Error{}}`.
pub fn error_result<'a>(env: Env<'a>, e: &Error) -> Term<'a> {
    (atoms::error(), encode(env, e)).encode(env)
}
