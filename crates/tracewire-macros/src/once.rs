//! The one rule every argument parser shares: a keyword is given at most once.

use quote::ToTokens;

/// Stores `value` in `slot`, or fails with "`keyword` specified more than once" on the
/// repeated keyword. Every argument parser goes through here.
pub(crate) fn set_once<T>(
    slot: &mut Option<T>,
    value: T,
    keyword: &dyn ToTokens,
    name: &str,
) -> syn::Result<()> {
    if slot.is_some() {
        return Err(syn::Error::new_spanned(
            keyword,
            format!("`{name}` specified more than once"),
        ));
    }
    *slot = Some(value);
    Ok(())
}
