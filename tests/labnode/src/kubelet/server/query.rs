//! Query strings as Go's `url.ParseQuery` reads them (`%XX` escapes, `+` is a space), keeping
//! repeated keys — exec's `command` is one parameter per argument.

/// The key/value pairs of a query string, in order.
pub fn pairs(raw: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}
