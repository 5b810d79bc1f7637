//! Parsing of `#[traced(...)]` arguments and `#[event(...)]` attributes.

use proc_macro2::Span;
use quote::ToTokens;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Expr, Ident, LitBool, LitInt, LitStr, Path, Token};

use crate::once::set_once;

pub(crate) mod kw {
    syn::custom_keyword!(name);
    syn::custom_keyword!(fields);
    syn::custom_keyword!(skip);
    syn::custom_keyword!(skip_all);
    syn::custom_keyword!(kind);
    syn::custom_keyword!(metrics);
    syn::custom_keyword!(version);
    syn::custom_keyword!(display);
    syn::custom_keyword!(pii);
    syn::custom_keyword!(objective);
}

/// The span kind written in `kind = ...`.
#[derive(Clone, Copy)]
pub(crate) enum SpanKind {
    Internal,
    Client,
    Server,
    Producer,
    Consumer,
}

impl SpanKind {
    pub(crate) fn variant(self) -> Ident {
        let name = match self {
            SpanKind::Internal => "Internal",
            SpanKind::Client => "Client",
            SpanKind::Server => "Server",
            SpanKind::Producer => "Producer",
            SpanKind::Consumer => "Consumer",
        };
        Ident::new(name, Span::call_site())
    }
}

/// One `fields(key = expr)` entry.
pub(crate) struct Field {
    pub(crate) key: String,
    pub(crate) value: Expr,
}

/// The arguments of `#[traced(...)]`.
#[derive(Default)]
pub(crate) struct TracedArgs {
    pub(crate) name: Option<LitStr>,
    pub(crate) fields: Option<Vec<Field>>,
    pub(crate) skip: Option<Vec<Ident>>,
    pub(crate) skip_all: Option<kw::skip_all>,
    pub(crate) kind: Option<SpanKind>,
    pub(crate) metrics: Option<LitBool>,
    pub(crate) krate: Option<Path>,
    pub(crate) objective: Option<crate::objective::ObjectiveArgs>,
}

impl Parse for TracedArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = TracedArgs::default();
        while !input.is_empty() {
            let lookahead = input.lookahead1();
            if lookahead.peek(kw::name) {
                let keyword: kw::name = input.parse()?;
                input.parse::<Token![=]>()?;
                let value: LitStr = input.parse()?;
                if value.value().trim().is_empty() {
                    return Err(syn::Error::new_spanned(
                        &value,
                        "the span name must not be empty",
                    ));
                }
                set_once(&mut args.name, value, &keyword, "name")?;
            } else if lookahead.peek(kw::fields) {
                let keyword: kw::fields = input.parse()?;
                let content;
                syn::parenthesized!(content in input);
                let fields = parse_fields(&content)?;
                set_once(&mut args.fields, fields, &keyword, "fields")?;
            } else if lookahead.peek(kw::skip_all) {
                let keyword: kw::skip_all = input.parse()?;
                set_once(&mut args.skip_all, keyword, &keyword, "skip_all")?;
            } else if lookahead.peek(kw::skip) {
                let keyword: kw::skip = input.parse()?;
                let content;
                syn::parenthesized!(content in input);
                let names = Punctuated::<Ident, Token![,]>::parse_terminated_with(
                    &content,
                    syn::ext::IdentExt::parse_any,
                )?;
                set_once(
                    &mut args.skip,
                    names.into_iter().collect(),
                    &keyword,
                    "skip",
                )?;
            } else if lookahead.peek(kw::kind) {
                let keyword: kw::kind = input.parse()?;
                input.parse::<Token![=]>()?;
                let kind = parse_kind(input)?;
                set_once(&mut args.kind, kind, &keyword, "kind")?;
            } else if lookahead.peek(kw::metrics) {
                let keyword: kw::metrics = input.parse()?;
                input.parse::<Token![=]>()?;
                let value: LitBool = input.parse()?;
                set_once(&mut args.metrics, value, &keyword, "metrics")?;
            } else if lookahead.peek(Token![crate]) {
                let keyword: Token![crate] = input.parse()?;
                input.parse::<Token![=]>()?;
                let path = Path::parse_mod_style(input)?;
                set_once(&mut args.krate, path, &keyword, "crate")?;
            } else if lookahead.peek(kw::objective) {
                let keyword: kw::objective = input.parse()?;
                let content;
                syn::parenthesized!(content in input);
                let objective: crate::objective::ObjectiveArgs = content.parse()?;
                objective.check(true)?;
                set_once(&mut args.objective, objective, &keyword, "objective")?;
            } else {
                return Err(lookahead.error());
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        if let (Some(skip_all), Some(_)) = (&args.skip_all, &args.skip) {
            return Err(syn::Error::new_spanned(
                skip_all,
                "`skip` and `skip_all` cannot be used together",
            ));
        }
        Ok(args)
    }
}

fn parse_kind(input: ParseStream<'_>) -> syn::Result<SpanKind> {
    let ident: Ident = input.parse()?;
    Ok(match ident.to_string().as_str() {
        "internal" => SpanKind::Internal,
        "client" => SpanKind::Client,
        "server" => SpanKind::Server,
        "producer" => SpanKind::Producer,
        "consumer" => SpanKind::Consumer,
        _ => {
            return Err(syn::Error::new_spanned(
                ident,
                "expected one of `client`, `server`, `producer`, `consumer`, `internal`",
            ));
        }
    })
}

fn parse_fields(input: ParseStream<'_>) -> syn::Result<Vec<Field>> {
    let mut fields: Vec<Field> = Vec::new();
    while !input.is_empty() {
        let (key, key_tokens, shorthand) = if input.peek(LitStr) {
            let lit: LitStr = input.parse()?;
            if lit.value().is_empty() {
                return Err(syn::Error::new_spanned(
                    &lit,
                    "a field name must not be empty",
                ));
            }
            (lit.value(), lit.to_token_stream(), None)
        } else {
            let first: Ident = input.call(syn::ext::IdentExt::parse_any)?;
            let mut key = first.to_string();
            let mut tokens = first.to_token_stream();
            let mut dotted = false;
            while input.peek(Token![.]) {
                let dot: Token![.] = input.parse()?;
                let part: Ident = input.call(syn::ext::IdentExt::parse_any)?;
                key.push('.');
                key.push_str(&part.to_string());
                dot.to_tokens(&mut tokens);
                part.to_tokens(&mut tokens);
                dotted = true;
            }
            (key, tokens, (!dotted).then_some(first))
        };
        let value = if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            if input.peek(Token![%]) || input.peek(Token![?]) {
                return Err(input.error(
                    "the `%` and `?` sigils of `tracing` are not supported here: \
                     record a value such as `key = value.to_string()`",
                ));
            }
            if input.is_empty() || input.peek(Token![,]) {
                return Err(input.error("expected an expression after `=`"));
            }
            input.parse::<Expr>()?
        } else {
            match shorthand {
                Some(ident) => syn::parse_quote_spanned!(ident.span()=> #ident),
                None => {
                    return Err(syn::Error::new_spanned(
                        &key_tokens,
                        "a dotted field name needs a value: `key.name = expr`",
                    ));
                }
            }
        };
        if fields.iter().any(|f| f.key == key) {
            return Err(syn::Error::new_spanned(
                &key_tokens,
                format!("field `{key}` specified more than once"),
            ));
        }
        fields.push(Field { key, value });
        if input.is_empty() {
            break;
        }
        input.parse::<Token![,]>()?;
    }
    Ok(fields)
}

/// The container attribute `#[event(name = "...", version = N)]`.
#[derive(Default)]
pub(crate) struct EventArgs {
    pub(crate) name: Option<LitStr>,
    pub(crate) version: Option<LitInt>,
    pub(crate) krate: Option<Path>,
}

impl EventArgs {
    pub(crate) fn parse_into(&mut self, input: ParseStream<'_>) -> syn::Result<()> {
        while !input.is_empty() {
            let lookahead = input.lookahead1();
            if lookahead.peek(kw::name) {
                let keyword: kw::name = input.parse()?;
                input.parse::<Token![=]>()?;
                let value: LitStr = input.parse()?;
                set_once(&mut self.name, value, &keyword, "name")?;
            } else if lookahead.peek(kw::version) {
                let keyword: kw::version = input.parse()?;
                input.parse::<Token![=]>()?;
                let value: LitInt = input.parse()?;
                set_once(&mut self.version, value, &keyword, "version")?;
            } else if lookahead.peek(Token![crate]) {
                let keyword: Token![crate] = input.parse()?;
                input.parse::<Token![=]>()?;
                let path = Path::parse_mod_style(input)?;
                set_once(&mut self.krate, path, &keyword, "crate")?;
            } else {
                return Err(lookahead.error());
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(())
    }
}

/// How a field holding personal data is written.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum PiiMode {
    Redact,
    Hash,
}

/// A field attribute `#[event(display)]`, `#[event(pii)]`, `#[event(pii = "hash")]`.
#[derive(Default)]
pub(crate) struct FieldArgs {
    pub(crate) display: Option<kw::display>,
    pub(crate) pii: Option<PiiMode>,
}

impl FieldArgs {
    pub(crate) fn parse_into(&mut self, input: ParseStream<'_>) -> syn::Result<()> {
        while !input.is_empty() {
            let lookahead = input.lookahead1();
            if lookahead.peek(kw::display) {
                let keyword: kw::display = input.parse()?;
                set_once(&mut self.display, keyword, &keyword, "display")?;
            } else if lookahead.peek(kw::pii) {
                let keyword: kw::pii = input.parse()?;
                let mode = if input.peek(Token![=]) {
                    input.parse::<Token![=]>()?;
                    let value: LitStr = input.parse()?;
                    match value.value().as_str() {
                        "hash" => PiiMode::Hash,
                        "redact" => PiiMode::Redact,
                        _ => {
                            return Err(syn::Error::new(
                                value.span(),
                                "expected `\"redact\"` or `\"hash\"`",
                            ));
                        }
                    }
                } else {
                    PiiMode::Redact
                };
                set_once(&mut self.pii, mode, &keyword, "pii")?;
            } else {
                return Err(lookahead.error());
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(())
    }
}
