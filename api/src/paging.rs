//! Keyset paging shared by the list routes: how many items a page holds
//! (`limit`), the key it starts after (`cursor`), and the `next_cursor` a
//! full page hands out.

use crate::error::ApiError;

/// `limit` from the query: 1 to `max`, `default` when absent.
pub(crate) fn limit(raw: Option<&str>, default: usize, max: usize) -> Result<usize, ApiError> {
    match raw {
        None => Ok(default),
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=max).contains(l))
            .ok_or_else(|| ApiError::invalid("limit", format!("must be a number from 1 to {max}"))),
    }
}

/// `cursor` from the query: the key of the previous page's last item.
pub(crate) fn cursor<K>(
    raw: Option<&str>,
    parse: impl FnOnce(&str) -> Option<K>,
) -> Result<Option<K>, ApiError> {
    raw.map(|c| {
        parse(c).ok_or_else(|| {
            ApiError::invalid(
                "cursor",
                "not a cursor: pass the next_cursor of the previous page",
            )
        })
    })
    .transpose()
}

/// The cursor of the page after `page`: a full page may have a next one,
/// and an empty next page ends the list.
pub(crate) fn next_cursor<T>(
    page: &[T],
    limit: usize,
    key: impl FnOnce(&T) -> String,
) -> Option<String> {
    (page.len() == limit)
        .then(|| page.last().map(key))
        .flatten()
}
