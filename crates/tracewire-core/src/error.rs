//! Error classification: what goes into `error.type`.

/// The short name of a type, for `error.type`: the last path segment with generic arguments
/// kept (`my_app::db::DbError<u8>` → `DbError<u8>`).
///
/// ```
/// assert_eq!(tracewire_core::error::short_type_name::<std::io::Error>(), "std::io::error::Error");
/// assert_eq!(tracewire_core::error::short_type_name::<String>(), "String");
/// ```
///
/// Well-known standard library errors keep their full path so they stay distinguishable.
pub fn short_type_name<T: ?Sized>() -> &'static str {
    let full = std::any::type_name::<T>();
    if full.starts_with("std::") || full.starts_with("core::") {
        return full;
    }
    // Cut at the last `::` that is not inside generic arguments.
    let mut depth = 0usize;
    let mut cut = 0usize;
    let bytes = full.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'<' => depth += 1,
            b'>' => depth = depth.saturating_sub(1),
            b':' if depth == 0 && bytes.get(i + 1) == Some(&b':') => {
                cut = i + 2;
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    &full[cut..]
}

/// `error.type` for an HTTP status code: the code as text for 4xx (client side) and 5xx, none
/// otherwise. Returned as `&'static str` so no allocation happens per request.
pub fn http_status_error_type(status: u16, client_side: bool) -> Option<&'static str> {
    if status >= 500 || (client_side && status >= 400) {
        Some(status_text(status))
    } else {
        None
    }
}

/// The decimal text of an HTTP status code in 100..=599, `"_OTHER"` outside that range.
pub fn status_text(status: u16) -> &'static str {
    static CODES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    if !(100..=599).contains(&status) {
        return "_OTHER";
    }
    let codes = CODES.get_or_init(|| (100..=599u16).map(|c| c.to_string()).collect());
    &codes[usize::from(status - 100)]
}

#[cfg(test)]
mod tests {
    use super::*;

    mod inner {
        #[allow(dead_code)]
        pub(crate) struct DbError<T>(pub(crate) T);
    }

    #[test]
    fn short_names() {
        assert_eq!(short_type_name::<inner::DbError<u8>>(), "DbError<u8>");
        assert_eq!(short_type_name::<std::io::Error>(), "std::io::error::Error");
        assert_eq!(short_type_name::<u32>(), "u32");
    }

    #[test]
    fn status_error_types() {
        assert_eq!(http_status_error_type(503, false), Some("503"));
        assert_eq!(http_status_error_type(404, false), None);
        assert_eq!(http_status_error_type(404, true), Some("404"));
        assert_eq!(http_status_error_type(200, true), None);
        assert_eq!(status_text(42), "_OTHER");
    }
}
