//! Code generation of `#[traced]`.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::visit::Visit;
use syn::{
    Block, Expr, FnArg, GenericArgument, Ident, ItemFn, Pat, PathArguments, ReturnType, Stmt, Type,
    TypeParamBound,
};

use crate::attr::{SpanKind, TracedArgs};

/// Expands `#[traced(args)] item`.
pub(crate) fn traced(args: TracedArgs, item: ItemFn) -> syn::Result<TokenStream> {
    if let Some(constness) = &item.sig.constness {
        return Err(syn::Error::new_spanned(
            constness,
            "`#[traced]` cannot be used on a `const fn`",
        ));
    }
    check_skips(&args, &item)?;

    let krate = match &args.krate {
        Some(path) => quote!(#path),
        None => quote!(::tracewire),
    };
    let private = quote!(#krate::__private);
    let function = item.sig.ident.unraw_string();
    let name = args
        .name
        .as_ref()
        .map(|n| n.value())
        .unwrap_or_else(|| function.clone());
    let kind = args.kind.unwrap_or(SpanKind::Internal).variant();
    let metrics = args.metrics.as_ref().is_none_or(|m| m.value);

    let site = Ident::new("__TRACEWIRE_CALLSITE", Span::mixed_site());
    let guard = Ident::new("__tracewire_guard", Span::mixed_site());
    let ret = Ident::new("__tracewire_ret", Span::mixed_site());

    let objective = match &args.objective {
        Some(_) if !metrics => {
            return Err(syn::Error::new_spanned(
                args.metrics.as_ref(),
                "an `objective` is measured by the function metrics: remove `metrics = false`",
            ));
        }
        Some(objective) => objective.registration(
            &krate,
            Some(&function),
            Some(quote!(#krate::ops::Subject::Function {
                name: #function,
                module: ::core::option::Option::Some(::core::module_path!()),
            })),
        ),
        None => quote!(),
    };
    let site_static = quote! {
        static #site: #private::CallSite = #private::CallSite::new(
            #name,
            #function,
            ::core::concat!(::core::module_path!(), "::", #function),
            ::core::module_path!(),
            #private::Kind::#kind,
            #metrics,
        );
        #objective
    };

    let fields = args.fields.as_deref().unwrap_or_default();
    let record_fields = if fields.is_empty() {
        quote!()
    } else {
        let entries = fields.iter().map(|field| {
            let key = &field.key;
            let value = &field.value;
            quote_spanned! {value.span()=>
                #private::KeyValue::new(#key, #private::field_value(&(#value)))
            }
        });
        quote! {
            if #guard.is_recording() {
                #guard.set_attributes([#(#entries),*]);
            }
        }
    };

    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = item;

    // What the body returns, when it can be named, and whether it is a `Result`.
    let output = match async_trait_body(&sig, &block) {
        Some(_) => async_trait_output(&sig.output),
        None => match &sig.output {
            ReturnType::Default => Some(syn::parse_quote!(())),
            ReturnType::Type(_, ty) => Some((**ty).clone()),
        },
    }
    .filter(|ty| !contains_impl_trait(ty));
    let annotation = output.as_ref().map(|ty| quote!(: #ty));
    let fallible = output.as_ref().is_some_and(is_result);
    let record_result = if fallible {
        let err = Ident::new("__tracewire_err", Span::mixed_site());
        quote! {
            if let ::core::result::Result::Err(#err) = &#ret {
                #[allow(unused_imports)]
                use #private::{ViaDebug as _, ViaDisplay as _, ViaNothing as _};
                #[allow(clippy::needless_borrow)]
                let __tracewire_message = if #guard.is_recording() {
                    (&&&#private::ErrorRef(#err)).tracewire_message()
                } else {
                    ::core::option::Option::None
                };
                #guard.record_error(#private::error_type(#err), __tracewire_message);
            }
        }
    } else {
        quote!()
    };
    let guard_mut = fallible.then(|| quote!(mut));
    let is_async = sig.asyncness.is_some() || async_trait_body(&sig, &block).is_some();
    let start_mut = (fallible && !is_async).then(|| quote!(mut));

    let start = quote! {
        #site_static
        let #start_mut #guard = #site.start();
        #record_fields
    };

    let body_future = Ident::new("__tracewire_body", Span::mixed_site());
    let async_epilogue = |inner: TokenStream| {
        quote! {
            let #body_future = #inner;
            if #guard.is_idle() {
                // Nothing to record however the call ends: the body runs unwrapped.
                ::core::mem::drop(#guard);
                return #body_future.await;
            }
            let (#ret, #guard_mut #guard) = #private::Instrumented::new(#body_future, #guard).await;
            #[allow(clippy::let_unit_value)]
            let #ret #annotation = #ret;
            #record_result
            #guard.finish();
            #ret
        }
    };

    let body = if sig.asyncness.is_some() {
        let epilogue = async_epilogue(quote!(async move #block));
        quote!({ #start #epilogue })
    } else if let Some((pin, inner)) = async_trait_body(&sig, &block) {
        let epilogue = async_epilogue(quote!(async move #inner));
        quote!({ #pin(async move { #start #epilogue }) })
    } else {
        quote!({
            #start
            #[allow(clippy::let_unit_value)]
            let #ret #annotation = {
                let _entered = #guard.enter();
                #[allow(clippy::redundant_closure_call)]
                (move || #block)()
            };
            #record_result
            #guard.finish();
            #ret
        })
    };

    Ok(quote! {
        #(#attrs)*
        #vis #sig #body
    })
}

trait UnrawString {
    fn unraw_string(&self) -> String;
}

impl UnrawString for Ident {
    fn unraw_string(&self) -> String {
        let s = self.to_string();
        s.strip_prefix("r#").map(str::to_owned).unwrap_or(s)
    }
}

/// `skip(name)` must name a parameter.
fn check_skips(args: &TracedArgs, item: &ItemFn) -> syn::Result<()> {
    let Some(skips) = &args.skip else {
        return Ok(());
    };
    let mut params = Vec::new();
    for input in &item.sig.inputs {
        match input {
            FnArg::Receiver(_) => params.push("self".to_owned()),
            FnArg::Typed(pat) => collect_idents(&pat.pat, &mut params),
        }
    }
    for skip in skips {
        let name = skip.unraw_string();
        if !params.contains(&name) {
            return Err(syn::Error::new_spanned(
                skip,
                format!("`{}` has no parameter named `{name}`", item.sig.ident),
            ));
        }
    }
    Ok(())
}

fn collect_idents(pat: &Pat, out: &mut Vec<String>) {
    match pat {
        Pat::Ident(p) => {
            out.push(p.ident.unraw_string());
            if let Some((_, sub)) = &p.subpat {
                collect_idents(sub, out);
            }
        }
        Pat::Reference(p) => collect_idents(&p.pat, out),
        Pat::Tuple(p) => p.elems.iter().for_each(|e| collect_idents(e, out)),
        Pat::TupleStruct(p) => p.elems.iter().for_each(|e| collect_idents(e, out)),
        Pat::Struct(p) => p.fields.iter().for_each(|f| collect_idents(&f.pat, out)),
        Pat::Slice(p) => p.elems.iter().for_each(|e| collect_idents(e, out)),
        Pat::Type(p) => collect_idents(&p.pat, out),
        Pat::Paren(p) => collect_idents(&p.pat, out),
        _ => {}
    }
}

/// Recognises the body `#[async_trait]` generates, `{ Box::pin(async move { ... }) }`, and
/// returns the `Box::pin` path and the inner async block.
fn async_trait_body<'a>(
    sig: &syn::Signature,
    block: &'a Block,
) -> Option<(&'a syn::ExprPath, &'a Block)> {
    if sig.asyncness.is_some() {
        return None;
    }
    let [Stmt::Expr(Expr::Call(call), None)] = block.stmts.as_slice() else {
        return None;
    };
    let Expr::Path(func) = &*call.func else {
        return None;
    };
    let segments: Vec<String> = func
        .path
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect();
    if !segments.ends_with(&["Box".to_owned(), "pin".to_owned()]) || call.args.len() != 1 {
        return None;
    }
    match call.args.first() {
        Some(Expr::Async(async_block)) if async_block.capture.is_some() => {
            Some((func, &async_block.block))
        }
        _ => None,
    }
}

/// `T` from `Pin<Box<dyn Future<Output = T> + Send + 'async_trait>>`.
fn async_trait_output(output: &ReturnType) -> Option<Type> {
    let ReturnType::Type(_, ty) = output else {
        return None;
    };
    let pin = last_segment(ty)?;
    let boxed = single_type_argument(&pin.arguments)?;
    let boxed = last_segment(boxed)?;
    let Type::TraitObject(object) = ungroup(single_type_argument(&boxed.arguments)?) else {
        return None;
    };
    object.bounds.iter().find_map(|bound| {
        let TypeParamBound::Trait(bound) = bound else {
            return None;
        };
        let future = bound.path.segments.last()?;
        let PathArguments::AngleBracketed(args) = &future.arguments else {
            return None;
        };
        args.args.iter().find_map(|arg| match arg {
            GenericArgument::AssocType(assoc) if assoc.ident == "Output" => Some(assoc.ty.clone()),
            _ => None,
        })
    })
}

fn ungroup(ty: &Type) -> &Type {
    match ty {
        Type::Group(g) => ungroup(&g.elem),
        Type::Paren(p) => ungroup(&p.elem),
        other => other,
    }
}

fn last_segment(ty: &Type) -> Option<&syn::PathSegment> {
    match ungroup(ty) {
        Type::Path(path) if path.qself.is_none() => path.path.segments.last(),
        _ => None,
    }
}

fn single_type_argument(args: &PathArguments) -> Option<&Type> {
    let PathArguments::AngleBracketed(args) = args else {
        return None;
    };
    args.args.iter().find_map(|arg| match arg {
        GenericArgument::Type(ty) => Some(ty),
        _ => None,
    })
}

/// Whether a return type is a `Result` (`Result<T, E>`, `io::Result<T>`, `anyhow::Result<T>`, …).
fn is_result(ty: &Type) -> bool {
    last_segment(ty).is_some_and(|s| s.ident == "Result")
}

fn contains_impl_trait(ty: &Type) -> bool {
    struct Finder(bool);
    impl<'ast> Visit<'ast> for Finder {
        fn visit_type_impl_trait(&mut self, _: &'ast syn::TypeImplTrait) {
            self.0 = true;
        }
    }
    let mut finder = Finder(false);
    finder.visit_type(ty);
    finder.0
}

/// The error for an item that is not a function: points at its keyword.
pub(crate) fn not_a_function(item: &syn::Item) -> syn::Error {
    let message = "`#[traced]` can only be used on functions and methods with a body";
    let keyword: Option<&dyn quote::ToTokens> = match item {
        syn::Item::Struct(i) => Some(&i.struct_token),
        syn::Item::Enum(i) => Some(&i.enum_token),
        syn::Item::Union(i) => Some(&i.union_token),
        syn::Item::Impl(i) => Some(&i.impl_token),
        syn::Item::Trait(i) => Some(&i.trait_token),
        syn::Item::Mod(i) => Some(&i.mod_token),
        syn::Item::Const(i) => Some(&i.const_token),
        syn::Item::Static(i) => Some(&i.static_token),
        syn::Item::Type(i) => Some(&i.type_token),
        syn::Item::Use(i) => Some(&i.use_token),
        _ => None,
    };
    match keyword {
        Some(keyword) => syn::Error::new_spanned(keyword, message),
        None => syn::Error::new_spanned(item, message),
    }
}
