//! `tracewire::objective!(...)` and the `objective(...)` argument of `#[traced]`: parsing,
//! compile-time checks, and the registration they expand to.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::parse::{Parse, ParseStream};
use syn::{Expr, ExprLit, Ident, Lit, LitStr, Path, Token};

use crate::once::set_once;

/// Bucket bounds of tracewire's duration histograms, in nanoseconds (the semantic
/// conventions' boundaries, `tracewire_core::metrics::DURATION_BOUNDARIES_SECONDS`).
const BUCKET_BOUNDS_NANOS: [u64; 14] = [
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    75_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    750_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    7_500_000_000,
    10_000_000_000,
];

const BUCKET_LIST: &str =
    "5ms, 10ms, 25ms, 50ms, 75ms, 100ms, 250ms, 500ms, 750ms, 1s, 2.5s, 5s, 7.5s, 10s";

const KEYWORDS: &str = "`name`, `http_route`, `all_http_routes`, `function`, `module`, `amqp_queue`, \
     `kafka_topic`, `availability`, `latency`, `window`, `description`, `crate`";

/// What an objective measures, as written.
pub(crate) enum SubjectArg {
    HttpRoute(Expr),
    AllHttpRoutes,
    Function(Expr),
    AmqpQueue(Expr),
    KafkaTopic(Expr),
}

/// `99.9%`, exactly, in parts per million.
pub(crate) struct PercentArg {
    ppm: u32,
}

/// `250ms`, `2.5s`, `30d`, exactly, in nanoseconds.
pub(crate) struct DurationArg {
    nanos: u128,
    span: Span,
}

/// The arguments of an objective.
#[derive(Default)]
pub(crate) struct ObjectiveArgs {
    pub(crate) name: Option<LitStr>,
    subject: Option<(Ident, SubjectArg)>,
    module: Option<(Ident, Expr)>,
    availability: Option<PercentArg>,
    latency: Option<(PercentArg, DurationArg)>,
    window: Option<DurationArg>,
    description: Option<LitStr>,
    pub(crate) krate: Option<Path>,
    /// Where errors about the whole objective point.
    span: Option<Span>,
}

impl Parse for ObjectiveArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = ObjectiveArgs {
            span: Some(input.span()),
            ..Default::default()
        };
        while !input.is_empty() {
            if input.peek(Token![crate]) {
                let keyword: Token![crate] = input.parse()?;
                input.parse::<Token![=]>()?;
                let path = Path::parse_mod_style(input)?;
                set_once(&mut args.krate, path, &keyword, "crate")?;
            } else {
                let keyword: Ident = input.call(syn::ext::IdentExt::parse_any)?;
                args.parse_argument(&keyword, input)?;
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(args)
    }
}

/// Parses `= value` after a keyword.
fn value<T>(
    input: ParseStream<'_>,
    parse: impl FnOnce(ParseStream<'_>) -> syn::Result<T>,
) -> syn::Result<T> {
    input.parse::<Token![=]>()?;
    parse(input)
}

impl ObjectiveArgs {
    fn parse_argument(&mut self, keyword: &Ident, input: ParseStream<'_>) -> syn::Result<()> {
        let key = keyword.to_string();
        let subject = |arg: SubjectArg, slot: &mut Option<(Ident, SubjectArg)>| {
            if let Some((previous, _)) = slot {
                return Err(syn::Error::new_spanned(
                    keyword,
                    format!(
                        "an objective measures one thing: `{key}` and `{previous}` cannot be used together"
                    ),
                ));
            }
            *slot = Some((keyword.clone(), arg));
            Ok(())
        };
        match key.as_str() {
            "name" => {
                let name: LitStr = value(input, |i| i.parse())?;
                check_name(&name)?;
                set_once(&mut self.name, name, keyword, "name")
            }
            "http_route" => {
                let route: Expr = value(input, |i| i.parse())?;
                if let Some(text) = str_literal(&route)
                    && !text.starts_with('/')
                {
                    return Err(syn::Error::new_spanned(
                        &route,
                        "a route starts with `/`, as written in the router (e.g. \"/users/{id}\")",
                    ));
                }
                subject(SubjectArg::HttpRoute(route), &mut self.subject)
            }
            "all_http_routes" => subject(SubjectArg::AllHttpRoutes, &mut self.subject),
            "function" => {
                let name: Expr = value(input, |i| i.parse())?;
                non_empty(&name)?;
                subject(SubjectArg::Function(name), &mut self.subject)
            }
            "amqp_queue" => {
                let name: Expr = value(input, |i| i.parse())?;
                non_empty(&name)?;
                subject(SubjectArg::AmqpQueue(name), &mut self.subject)
            }
            "kafka_topic" => {
                let name: Expr = value(input, |i| i.parse())?;
                non_empty(&name)?;
                subject(SubjectArg::KafkaTopic(name), &mut self.subject)
            }
            "module" => {
                let module: Expr = value(input, |i| i.parse())?;
                set_once(
                    &mut self.module,
                    (keyword.clone(), module),
                    keyword,
                    "module",
                )
            }
            "availability" => {
                let percent = value(input, parse_percent)?;
                set_once(&mut self.availability, percent, keyword, "availability")
            }
            "latency" => {
                let (percent, threshold) = value(input, |input| {
                    let percent = parse_percent(input)?;
                    if input.peek(Token![<=]) {
                        input.parse::<Token![<=]>()?;
                    } else if input.peek(Token![<]) {
                        input.parse::<Token![<]>()?;
                    } else {
                        return Err(
                            input.error("expected `<` and a threshold: `latency = 99% < 250ms`")
                        );
                    }
                    let threshold = parse_duration(input)?;
                    check_bucket(&threshold)?;
                    Ok((percent, threshold))
                })?;
                set_once(&mut self.latency, (percent, threshold), keyword, "latency")
            }
            "window" => {
                let window = value(input, parse_duration)?;
                if window.nanos < 86_400_000_000_000 || !window.nanos.is_multiple_of(1_000_000_000)
                {
                    return Err(syn::Error::new(
                        window.span,
                        "the window must be whole seconds and at least a day (`30d`, `28d`, `7d`)",
                    ));
                }
                set_once(&mut self.window, window, keyword, "window")
            }
            "description" => {
                let text: LitStr = value(input, |i| i.parse())?;
                set_once(&mut self.description, text, keyword, "description")
            }
            _ => Err(syn::Error::new_spanned(
                keyword,
                format!("unknown objective argument `{key}`: expected one of {KEYWORDS}"),
            )),
        }
    }

    /// Checks what only the whole objective can tell. `in_traced`: the objective of a
    /// `#[traced]` function, which measures the function itself.
    pub(crate) fn check(&self, in_traced: bool) -> syn::Result<()> {
        let span = self.span.unwrap_or_else(Span::call_site);
        if in_traced {
            if let Some((keyword, _)) = &self.subject {
                return Err(syn::Error::new_spanned(
                    keyword,
                    format!(
                        "the objective of `#[traced]` measures the function itself: remove `{keyword}`"
                    ),
                ));
            }
            if let Some((keyword, _)) = &self.module {
                return Err(syn::Error::new_spanned(
                    keyword,
                    "the objective of `#[traced]` measures the function itself: remove `module`",
                ));
            }
        } else {
            if self.name.is_none() {
                return Err(syn::Error::new(
                    span,
                    "an objective needs a `name = \"...\"`",
                ));
            }
            match &self.subject {
                None => {
                    return Err(syn::Error::new(
                        span,
                        "an objective needs what it measures: `http_route = \"...\"`, `all_http_routes`, \
                         `function = \"...\"`, `amqp_queue = \"...\"` or `kafka_topic = \"...\"`",
                    ));
                }
                Some((_, SubjectArg::Function(_))) => {}
                Some(_) => {
                    if let Some((keyword, _)) = &self.module {
                        return Err(syn::Error::new_spanned(
                            keyword,
                            "`module` goes with `function` only",
                        ));
                    }
                }
            }
        }
        if self.availability.is_none() && self.latency.is_none() {
            return Err(syn::Error::new(
                span,
                "an objective needs a target: `availability = 99.9%`, `latency = 99% < 250ms`, or both",
            ));
        }
        Ok(())
    }

    /// The `Objective` value, measuring `subject` (the parsed one when `None`).
    pub(crate) fn objective_expr(
        &self,
        krate: &TokenStream,
        default_name: Option<&str>,
        function_subject: Option<TokenStream>,
    ) -> TokenStream {
        let ops = quote!(#krate::ops);
        let name = match (&self.name, default_name) {
            (Some(name), _) => name.to_token_stream(),
            (None, Some(name)) => quote!(#name),
            (None, None) => quote!(""),
        };
        let subject = match (function_subject, &self.subject) {
            (Some(subject), _) => subject,
            (None, Some((_, arg))) => match arg {
                SubjectArg::HttpRoute(route) => quote!(#ops::Subject::HttpRoute(#route)),
                SubjectArg::AllHttpRoutes => quote!(#ops::Subject::AllHttpRoutes),
                SubjectArg::Function(function) => {
                    let module = match &self.module {
                        Some((_, module)) => quote!(::core::option::Option::Some(#module)),
                        None => quote!(::core::option::Option::None),
                    };
                    quote!(#ops::Subject::Function { name: #function, module: #module })
                }
                SubjectArg::AmqpQueue(queue) => quote!(#ops::Subject::AmqpQueue(#queue)),
                SubjectArg::KafkaTopic(topic) => quote!(#ops::Subject::KafkaTopic(#topic)),
            },
            (None, None) => quote!(#ops::Subject::AllHttpRoutes),
        };
        let mut expr = quote!(#ops::Objective::new(#name, #subject));
        if let Some(percent) = &self.availability {
            let ppm = percent.ppm;
            expr = quote!(#expr.with_availability(#ops::Percent::from_ppm(#ppm)));
        }
        if let Some((percent, threshold)) = &self.latency {
            let ppm = percent.ppm;
            let nanos = threshold.nanos as u64;
            expr = quote!(#expr.with_latency(
                #ops::Percent::from_ppm(#ppm),
                ::core::time::Duration::from_nanos(#nanos)
            ));
        }
        if let Some(window) = &self.window {
            let secs = (window.nanos / 1_000_000_000) as u64;
            expr = quote!(#expr.with_window(::core::time::Duration::from_secs(#secs)));
        }
        if let Some(description) = &self.description {
            expr = quote!(#expr.with_description(#description));
        }
        quote!(#expr.declared_at(::core::file!(), ::core::line!()))
    }

    /// The link-time registration of the objective.
    pub(crate) fn registration(
        &self,
        krate: &TokenStream,
        default_name: Option<&str>,
        function_subject: Option<TokenStream>,
    ) -> TokenStream {
        let objective = self.objective_expr(krate, default_name, function_subject);
        let span = self.span.unwrap_or_else(Span::call_site);
        quote_spanned! {span=>
            const _: () = {
                #krate::__private::event::inventory::submit! {
                    #krate::__private::ObjectiveRegistration(#objective)
                }
            };
        }
    }
}

fn str_literal(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Some(s.value()),
        _ => None,
    }
}

fn non_empty(expr: &Expr) -> syn::Result<()> {
    if str_literal(expr).is_some_and(|s| s.is_empty()) {
        return Err(syn::Error::new_spanned(expr, "the name must not be empty"));
    }
    Ok(())
}

/// Objective names end up in rule, alert and file names: keep them plain.
pub(crate) fn check_name(name: &LitStr) -> syn::Result<()> {
    let text = name.value();
    if text.is_empty()
        || !text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(syn::Error::new_spanned(
            name,
            "an objective name is letters, digits, `-` and `_` (it becomes part of alert names)",
        ));
    }
    Ok(())
}

/// `digits` (`99`, `99.95`) times 10^`scale`, exactly; `None` when it has more decimals than
/// `scale` or does not fit.
fn scaled(digits: &str, scale: u32) -> Option<u128> {
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if frac.len() > scale as usize {
        return None;
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let frac_value: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    let frac_scaled = frac_value.checked_mul(10u128.pow(scale - frac.len() as u32))?;
    whole
        .checked_mul(10u128.pow(scale))?
        .checked_add(frac_scaled)
}

fn parse_percent(input: ParseStream<'_>) -> syn::Result<PercentArg> {
    let lit: Lit = input
        .parse()
        .map_err(|e| syn::Error::new(e.span(), "expected a percentage such as `99.9%`"))?;
    let (digits, suffix) = match &lit {
        Lit::Int(i) => (i.base10_digits().to_owned(), i.suffix().to_owned()),
        Lit::Float(f) => (f.base10_digits().to_owned(), f.suffix().to_owned()),
        _ => {
            return Err(syn::Error::new_spanned(
                &lit,
                "expected a percentage such as `99.9%`",
            ));
        }
    };
    if !suffix.is_empty() || !input.peek(Token![%]) {
        return Err(syn::Error::new_spanned(
            &lit,
            "expected a percentage such as `99.9%`",
        ));
    }
    input.parse::<Token![%]>()?;
    let Some(ppm) = scaled(&digits, 4) else {
        return Err(syn::Error::new_spanned(
            &lit,
            "a percentage has at most four decimals (`99.9999%`)",
        ));
    };
    if ppm == 0 || ppm >= 1_000_000 {
        return Err(syn::Error::new_spanned(
            &lit,
            "a target is above 0% and below 100% (100% leaves no error budget)",
        ));
    }
    Ok(PercentArg { ppm: ppm as u32 })
}

fn parse_duration(input: ParseStream<'_>) -> syn::Result<DurationArg> {
    const EXPECTED: &str = "expected a duration such as `250ms`, `2.5s`, `6h` or `30d`";
    let lit: Lit = input
        .parse()
        .map_err(|e| syn::Error::new(e.span(), EXPECTED))?;
    let (digits, suffix) = match &lit {
        Lit::Int(i) => (i.base10_digits().to_owned(), i.suffix().to_owned()),
        Lit::Float(f) => (f.base10_digits().to_owned(), f.suffix().to_owned()),
        _ => return Err(syn::Error::new_spanned(&lit, EXPECTED)),
    };
    let unit: u128 = match suffix.as_str() {
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "d" => 86_400_000_000_000,
        _ => return Err(syn::Error::new_spanned(&lit, EXPECTED)),
    };
    // Exact: digits with up to nine decimals, times the unit, must be whole nanoseconds.
    let nanos = scaled(&digits, 9)
        .and_then(|v| v.checked_mul(unit))
        .filter(|v| v.is_multiple_of(1_000_000_000))
        .map(|v| v / 1_000_000_000)
        .filter(|v| *v <= u128::from(u64::MAX));
    match nanos {
        Some(nanos) => Ok(DurationArg {
            nanos,
            span: lit.span(),
        }),
        None => Err(syn::Error::new_spanned(&lit, EXPECTED)),
    }
}

fn check_bucket(threshold: &DurationArg) -> syn::Result<()> {
    if BUCKET_BOUNDS_NANOS
        .iter()
        .any(|b| u128::from(*b) == threshold.nanos)
    {
        return Ok(());
    }
    Err(syn::Error::new(
        threshold.span,
        format!(
            "the latency threshold must be a bucket bound of the duration histograms, one of \
             {BUCKET_LIST}: a threshold between bounds cannot be measured"
        ),
    ))
}
