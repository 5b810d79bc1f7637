//! Parsing and code generation of `#[derive(Event)]`.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Fields, GenericArgument, GenericParam, Ident, PathArguments, Type};

use crate::attr::{EventArgs, FieldArgs, PiiMode};

/// Field names the log line already uses (kept in step with
/// `tracewire_core::event::RESERVED_FIELD_NAMES`).
const RESERVED: [&str; 7] = [
    "timestamp",
    "level",
    "message",
    "target",
    "trace_id",
    "span_id",
    "request_id",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Integer,
    Number,
    Boolean,
    String,
    Display,
}

struct EventField {
    ident: Ident,
    name: String,
    ty: Type,
    kind: Kind,
    optional: bool,
    pii: Option<PiiMode>,
}

pub(crate) fn derive(input: DeriveInput) -> syn::Result<TokenStream> {
    let mut args = EventArgs::default();
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("event")) {
        attr.parse_args_with(|input: syn::parse::ParseStream<'_>| args.parse_into(input))?;
    }
    let ident = &input.ident;
    let Some(name) = args.name.as_ref() else {
        return Err(syn::Error::new_spanned(
            ident,
            "missing `#[event(name = \"...\", version = N)]` on the event type",
        ));
    };
    let name_value = name.value();
    if name_value.is_empty()
        || !name_value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(syn::Error::new_spanned(
            name,
            "an event name is made of ASCII letters, digits, `.`, `_` and `-`, e.g. `order.placed`",
        ));
    }
    let Some(version) = args.version.as_ref() else {
        return Err(syn::Error::new_spanned(
            ident,
            "missing `version = N` in `#[event(...)]`",
        ));
    };
    let version_value: u32 = version.base10_parse()?;
    if version_value == 0 {
        return Err(syn::Error::new_spanned(
            version,
            "event versions start at 1",
        ));
    }
    if let Some(param) = input
        .generics
        .params
        .iter()
        .find(|p| !matches!(p, GenericParam::Lifetime(_)))
    {
        return Err(syn::Error::new_spanned(
            param,
            "an event cannot have type or const parameters: its schema must be fixed",
        ));
    }

    let named = match &input.data {
        Data::Struct(data) => match &data.fields {
            Fields::Named(named) => named,
            other => {
                return Err(syn::Error::new_spanned(
                    other,
                    "`#[derive(Event)]` needs a struct with named fields",
                ));
            }
        },
        Data::Enum(data) => {
            return Err(syn::Error::new_spanned(
                data.enum_token,
                "`#[derive(Event)]` needs a struct with named fields",
            ));
        }
        Data::Union(data) => {
            return Err(syn::Error::new_spanned(
                data.union_token,
                "`#[derive(Event)]` needs a struct with named fields",
            ));
        }
    };

    let mut fields = Vec::new();
    for field in &named.named {
        let Some(field_ident) = field.ident.clone() else {
            continue;
        };
        let mut field_args = FieldArgs::default();
        for attr in field.attrs.iter().filter(|a| a.path().is_ident("event")) {
            attr.parse_args_with(|input: syn::parse::ParseStream<'_>| {
                field_args.parse_into(input)
            })?;
        }
        let field_name = {
            let s = field_ident.to_string();
            s.strip_prefix("r#").map(str::to_owned).unwrap_or(s)
        };
        if RESERVED.contains(&field_name.as_str()) {
            return Err(syn::Error::new_spanned(
                &field_ident,
                format!(
                    "field `{field_name}` collides with the log line's own `{field_name}` key: rename it"
                ),
            ));
        }
        let (inner, optional) = match option_inner(&field.ty) {
            Some(inner) => (inner, true),
            None => (&field.ty, false),
        };
        if optional && option_inner(inner).is_some() {
            return Err(syn::Error::new_spanned(
                &field.ty,
                format!("field `{field_name}`: nested `Option`s cannot be told apart in an event"),
            ));
        }
        let kind = if field_args.display.is_some() {
            Kind::Display
        } else {
            classify(inner).ok_or_else(|| {
                let shown = quote!(#inner).to_string().replace(' ', "");
                syn::Error::new_spanned(
                    &field.ty,
                    format!(
                        "field `{field_name}` has type `{shown}`, which an event cannot carry: use an integer, a float, \
                         `bool`, a string, or an `Option` of those, or mark a type implementing `Display` with \
                         `#[event(display)]`"
                    ),
                )
            })?
        };
        fields.push(EventField {
            ident: field_ident,
            name: field_name,
            ty: inner.clone(),
            kind,
            optional,
            pii: field_args.pii,
        });
    }

    let krate = match &args.krate {
        Some(path) => quote!(#path),
        None => quote!(::tracewire),
    };
    let private = quote!(#krate::__private);
    Ok(generate(
        &input,
        &private,
        &name_value,
        version_value,
        &fields,
    ))
}

fn generate(
    input: &DeriveInput,
    private: &TokenStream,
    name: &str,
    version: u32,
    fields: &[EventField],
) -> TokenStream {
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let static_lifetimes = input.generics.lifetimes().map(|_| quote!('static));
    let static_generics = if input.generics.params.is_empty() {
        quote!()
    } else {
        quote!(<#(#static_lifetimes),*>)
    };

    let field_schemas = fields.iter().map(|f| {
        let field_name = &f.name;
        let ty = match f.kind {
            Kind::Integer => quote!(Integer),
            Kind::Number => quote!(Number),
            Kind::Boolean => quote!(Boolean),
            Kind::String | Kind::Display => quote!(String),
        };
        let optional = f.optional;
        let pii = match f.pii {
            None => quote!(None),
            Some(PiiMode::Redact) => quote!(Redact),
            Some(PiiMode::Hash) => quote!(Hash),
        };
        quote! {
            #private::event::FieldSchema {
                name: #field_name,
                ty: #private::event::FieldType::#ty,
                optional: #optional,
                pii: #private::event::Pii::#pii,
            }
        }
    });

    let hashed =
        |f: &EventField| format_ident!("__tracewire_hash_{}", f.ident, span = Span::mixed_site());
    // Redacted values are never read; borrow them so they do not count as dead fields.
    let redacted = fields
        .iter()
        .filter(|f| f.pii == Some(PiiMode::Redact))
        .map(|f| {
            let field = &f.ident;
            quote!(let _ = &self.#field;)
        });
    let hashes = fields
        .iter()
        .filter(|f| f.pii == Some(PiiMode::Hash))
        .map(|f| {
            let local = hashed(f);
            let field = &f.ident;
            if f.optional {
                quote!(let #local = self.#field.as_ref().map(#private::event::pii_hash);)
            } else {
                quote!(let #local = #private::event::pii_hash(&self.#field);)
            }
        });

    let log_fields = fields.iter().map(|f| {
        let field = &f.ident;
        let key = format_ident!("{}", f.name, span = f.ident.span());
        let span = f.ty.span();
        let value = match (f.pii, f.optional) {
            (Some(PiiMode::Redact), false) => quote!(#private::event::REDACTED),
            (Some(PiiMode::Redact), true) => {
                quote!(self.#field.as_ref().map(|_| #private::event::REDACTED))
            }
            (Some(PiiMode::Hash), false) => {
                let local = hashed(f);
                quote!(#local.as_str())
            }
            (Some(PiiMode::Hash), true) => {
                let local = hashed(f);
                quote!(#local.as_deref())
            }
            (None, optional) => match (f.kind, optional) {
                (Kind::Integer | Kind::Number | Kind::Boolean, _) => quote!(self.#field),
                (Kind::String, false) => {
                    quote_spanned!(span=> #private::event::as_str(&self.#field))
                }
                (Kind::String, true) => {
                    quote_spanned!(span=> #private::event::opt_str(&self.#field))
                }
                (Kind::Display, false) => {
                    quote_spanned!(span=> #private::event::display(&self.#field))
                }
                (Kind::Display, true) => {
                    quote_spanned!(span=> #private::event::opt_display(&self.#field))
                }
            },
        };
        quote!(#key = #value,)
    });

    let span_attributes = fields.iter().map(|f| {
        let field = &f.ident;
        let key = &f.name;
        let span = f.ty.span();
        let value_of = |v: TokenStream| match (f.pii, f.kind) {
            (Some(PiiMode::Redact), _) => quote!(#private::event::REDACTED),
            (Some(PiiMode::Hash), _) => quote!(::core::clone::Clone::clone(#v)),
            (None, Kind::Display) => quote_spanned!(span=> #private::event::display_value(#v)),
            (None, _) => quote_spanned!(span=> #private::field_value(#v)),
        };
        let attributes = Ident::new("__tracewire_attributes", Span::mixed_site());
        match (f.pii, f.optional) {
            (Some(PiiMode::Hash), false) => {
                let local = hashed(f);
                let value = value_of(quote!(&#local));
                quote!(#attributes.push(#private::KeyValue::new(#key, #value));)
            }
            (Some(PiiMode::Hash), true) => {
                let local = hashed(f);
                let value = value_of(quote!(__v));
                quote!(if let ::core::option::Option::Some(__v) = &#local {
                    #attributes.push(#private::KeyValue::new(#key, #value));
                })
            }
            (_, false) => {
                let value = value_of(quote!(&self.#field));
                quote!(#attributes.push(#private::KeyValue::new(#key, #value));)
            }
            (_, true) => {
                let value = value_of(quote!(__v));
                quote!(if let ::core::option::Option::Some(__v) = &self.#field {
                    #attributes.push(#private::KeyValue::new(#key, #value));
                })
            }
        }
    });
    let attributes = Ident::new("__tracewire_attributes", Span::mixed_site());
    let span_ident = Ident::new("__tracewire_span", Span::mixed_site());

    quote! {
        impl #impl_generics #private::Event for #ident #ty_generics #where_clause {
            const NAME: &'static str = #name;
            const VERSION: u32 = #version;

            fn schema() -> &'static #private::event::EventSchema {
                static SCHEMA: #private::event::EventSchema = #private::event::EventSchema {
                    name: #name,
                    version: #version,
                    type_name: ::core::concat!(::core::module_path!(), "::", ::core::stringify!(#ident)),
                    fields: &[#(#field_schemas),*],
                };
                &SCHEMA
            }

            fn emit(&self) {
                #(#redacted)*
                #(#hashes)*
                #private::tracing::event!(
                    target: "tracewire::event",
                    #private::tracing::Level::INFO,
                    event.name = #name,
                    event.version = #version,
                    #(#log_fields)*
                    #name
                );
                #private::event::with_recording_span(|#span_ident| {
                    let mut #attributes = #private::event::header_attributes(#name, #version);
                    #(#span_attributes)*
                    #span_ident.add_event(#name, #attributes);
                });
            }
        }

        const _: () = {
            #private::event::inventory::submit! {
                #private::event::Registration(
                    <#ident #static_generics as #private::Event>::schema
                )
            }
        };
    }
}

/// `T` when `ty` is `Option<T>`.
fn option_inner(ty: &Type) -> Option<&Type> {
    let Type::Path(path) = ungroup(ty) else {
        return None;
    };
    if path.qself.is_some() {
        return None;
    }
    let last = path.path.segments.last()?;
    if last.ident != "Option" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match args.args.first() {
        Some(GenericArgument::Type(inner)) if args.args.len() == 1 => Some(inner),
        _ => None,
    }
}

fn ungroup(ty: &Type) -> &Type {
    match ty {
        Type::Group(g) => ungroup(&g.elem),
        Type::Paren(p) => ungroup(&p.elem),
        other => other,
    }
}

/// The kind of a field type, from its spelling.
fn classify(ty: &Type) -> Option<Kind> {
    match ungroup(ty) {
        Type::Reference(r) if r.mutability.is_none() => is_str(&r.elem).then_some(Kind::String),
        Type::Path(path) if path.qself.is_none() => {
            let last = path.path.segments.last()?;
            let name = last.ident.to_string();
            let plain = matches!(last.arguments, PathArguments::None);
            match name.as_str() {
                "i8" | "i16" | "i32" | "i64" | "i128" | "isize" | "u8" | "u16" | "u32" | "u64"
                | "u128" | "usize"
                    if plain =>
                {
                    Some(Kind::Integer)
                }
                "f32" | "f64" if plain => Some(Kind::Number),
                "bool" if plain => Some(Kind::Boolean),
                "String" if plain => Some(Kind::String),
                "Cow" | "Box" | "Arc" => {
                    let PathArguments::AngleBracketed(args) = &last.arguments else {
                        return None;
                    };
                    args.args
                        .iter()
                        .find_map(|a| match a {
                            GenericArgument::Type(t) => Some(t),
                            _ => None,
                        })
                        .filter(|t| is_str(t))
                        .map(|_| Kind::String)
                }
                _ => None,
            }
        }
        _ => None,
    }
}

fn is_str(ty: &Type) -> bool {
    matches!(ungroup(ty), Type::Path(p) if p.qself.is_none() && p.path.is_ident("str"))
}
