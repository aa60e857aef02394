//! Grafana dashboards: the JSON model checks and the canonical body render posts.
//!
//! Files go in as Grafana wrote them, including "Export for sharing externally"
//! (`__inputs`, `${DS_…}`), dashboards without a `uid`, and old ones with `rows`.
//! What Grafana's own import would do, MOP does to the body it renders; the file
//! stays unchanged.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::diag::{self, Diagnostic};
use crate::repo::Dashboard;
use crate::uid::{self, MAX_UID_LEN};

/// Backends MOP gives each tenant a datasource for: the `pluginId` Grafana exports
/// in `__inputs`, the datasource name MOP gives it, and the uid scope name.
const BACKENDS: [(&str, &str, &str); 4] = [
    ("prometheus", "Mimir", "mimir"),
    ("loki", "Loki", "loki"),
    ("tempo", "Tempo", "tempo"),
    ("grafana-pyroscope-datasource", "Pyroscope", "pyroscope"),
];

/// Datasource names and uids every Grafana org has without MOP creating them:
/// the built-in Grafana datasource (`pkg/tsdb/grafanads`, uid `grafana`, shown as
/// `-- Grafana --`), server-side expressions (`pkg/services/expr`, `__expr__`),
/// and the frontend's pseudo datasources `-- Mixed --` and `-- Dashboard --`.
const BUILT_IN: [&str; 6] = [
    "grafana",
    "-- Grafana --",
    "-- Mixed --",
    "-- Dashboard --",
    "__expr__",
    "Expression",
];

/// One entry of `__inputs`, as "Export for sharing externally" writes it.
#[derive(Deserialize)]
struct Input {
    #[serde(default)]
    name: String,
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default, rename = "pluginId")]
    plugin_id: String,
    #[serde(default)]
    value: Option<serde_json::Value>,
}

/// What a `${NAME}` of `__inputs` turns into.
enum InputValue {
    /// Replaced by this JSON-string-safe text in the rendered body.
    Replace(String),
    /// A datasource input of a type the tenant has no datasource for.
    NoDatasource { plugin: String },
}

/// What the checks read of a dashboard, in one pass over its text: the fields
/// below are read (panels and their queries typed, the small ones kept raw), every
/// other value is skipped, still syntax-checked. A dashboard is mostly panels, and
/// reading them as raw text first and parsing that text again cost a second pass
/// over most of its bytes.
#[derive(Default)]
struct Top<'a> {
    inputs: Option<&'a RawValue>,
    templating: Vec<Variable<'a>>,
    annotations: Vec<Variable<'a>>,
    panels: Vec<PanelInfo<'a>>,
    rows: Vec<Row<'a>>,
    uid: Option<&'a RawValue>,
    title: Option<&'a RawValue>,
}

impl<'a> Shape<'a> for Top<'a> {
    const FIELDS: &'static [&'static str] = &[
        "__inputs",
        "templating",
        "annotations",
        "panels",
        "rows",
        "uid",
        "title",
    ];
    fn read<A: MapAccess<'a>>(&mut self, field: usize, map: &mut A) -> Result<(), A::Error> {
        match field {
            0 => self.inputs = Some(map.next_value()?),
            1 => {
                self.templating = map
                    .next_value::<Object<List<'a>>>()?
                    .0
                    .unwrap_or_default()
                    .0
            }
            2 => {
                self.annotations = map
                    .next_value::<Object<List<'a>>>()?
                    .0
                    .unwrap_or_default()
                    .0
            }
            3 => self.panels = map.next_value::<Objects<PanelInfo<'a>>>()?.0,
            4 => self.rows = map.next_value::<Objects<Row<'a>>>()?.0,
            5 => self.uid = Some(map.next_value()?),
            _ => self.title = Some(map.next_value()?),
        }
        Ok(())
    }
}

/// A panel as the checks read it, with the panels of a collapsed row inside it.
#[derive(Default)]
struct PanelInfo<'a> {
    id: Option<&'a RawValue>,
    title: Option<&'a RawValue>,
    datasource: Option<&'a RawValue>,
    targets: Vec<Variable<'a>>,
    panels: Vec<PanelInfo<'a>>,
    library_panel: Option<&'a RawValue>,
}

impl<'a> Shape<'a> for PanelInfo<'a> {
    const FIELDS: &'static [&'static str] = &[
        "id",
        "title",
        "datasource",
        "targets",
        "panels",
        "libraryPanel",
    ];
    fn read<A: MapAccess<'a>>(&mut self, field: usize, map: &mut A) -> Result<(), A::Error> {
        match field {
            0 => self.id = Some(map.next_value()?),
            1 => self.title = Some(map.next_value()?),
            2 => self.datasource = Some(map.next_value()?),
            3 => self.targets = map.next_value::<Objects<Variable<'a>>>()?.0,
            4 => self.panels = map.next_value::<Objects<PanelInfo<'a>>>()?.0,
            _ => self.library_panel = Some(map.next_value()?),
        }
        Ok(())
    }
}

/// A query, template variable or annotation: its datasource, and its name.
#[derive(Default)]
struct Variable<'a> {
    datasource: Option<&'a RawValue>,
    name: Option<&'a RawValue>,
}

impl Variable<'_> {
    fn name(&self) -> Option<String> {
        self.name.and_then(|n| serde_json::from_str(n.get()).ok())
    }
}

impl<'a> Shape<'a> for Variable<'a> {
    const FIELDS: &'static [&'static str] = &["datasource", "name"];
    fn read<A: MapAccess<'a>>(&mut self, field: usize, map: &mut A) -> Result<(), A::Error> {
        match field {
            0 => self.datasource = Some(map.next_value()?),
            _ => self.name = Some(map.next_value()?),
        }
        Ok(())
    }
}

/// `templating` and `annotations`: `{"list": [...]}`.
#[derive(Default)]
struct List<'a>(Vec<Variable<'a>>);

impl<'a> Shape<'a> for List<'a> {
    const FIELDS: &'static [&'static str] = &["list"];
    fn read<A: MapAccess<'a>>(&mut self, _: usize, map: &mut A) -> Result<(), A::Error> {
        self.0 = map.next_value::<Objects<Variable<'a>>>()?.0;
        Ok(())
    }
}

/// A row of a schemaVersion < 16 dashboard.
#[derive(Default)]
struct Row<'a> {
    panels: Vec<PanelInfo<'a>>,
}

impl<'a> Shape<'a> for Row<'a> {
    const FIELDS: &'static [&'static str] = &["panels"];
    fn read<A: MapAccess<'a>>(&mut self, _: usize, map: &mut A) -> Result<(), A::Error> {
        self.panels = map.next_value::<Objects<PanelInfo<'a>>>()?.0;
        Ok(())
    }
}

/// A JSON object read field by field into `Self`, for the fields in `FIELDS`.
/// A repeated key replaces the earlier value, as Go's `encoding/json` (Grafana)
/// does.
trait Shape<'a>: Default {
    const FIELDS: &'static [&'static str];
    /// Reads the value of `FIELDS[field]`.
    fn read<A: MapAccess<'a>>(&mut self, field: usize, map: &mut A) -> Result<(), A::Error>;
}

/// A value that is `T` if it is an object, and nothing (skipped) otherwise.
/// Grafana stores a dashboard whatever shape its panels have: `POST
/// /api/dashboards/db` keeps the body as `simplejson.Json` and reads only `title`,
/// `id`, `uid`, `version` and `gnetId` (grafana/grafana
/// `pkg/services/dashboards/models.go`, `NewDashboardFromJson`). So a value of
/// another shape (`"targets": "x"`) is no reason to refuse the dashboard, and holds
/// nothing these checks read.
struct Object<T>(Option<T>);

/// The objects of a list, each read as `T`; other elements, or a value that is not
/// a list, are skipped.
struct Objects<T>(Vec<T>);

impl<'de, T: Shape<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Skipping::<Object<T>>(PhantomData))
    }
}

impl<'de, T: Shape<'de>> Deserialize<'de> for Objects<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Skipping::<Objects<T>>(PhantomData))
    }
}

/// The visitor of [`Object`] and [`Objects`]: every JSON type is accepted, and
/// what is not read is consumed with `IgnoredAny`.
struct Skipping<V>(PhantomData<V>);

/// What a [`Skipping`] visitor makes of an object, a list and any other value.
trait SkippingValue<'de>: Sized {
    fn other() -> Self;
    fn map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error>;
    fn seq<A: SeqAccess<'de>>(seq: A) -> Result<Self, A::Error>;
}

fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

impl<'de, T: Shape<'de>> SkippingValue<'de> for Object<T> {
    fn other() -> Self {
        Object(None)
    }
    fn map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut v = T::default();
        while let Some(field) = map.next_key_seed(Field(T::FIELDS))? {
            match field {
                Some(i) => v.read(i, &mut map)?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Object(Some(v)))
    }
    fn seq<A: SeqAccess<'de>>(seq: A) -> Result<Self, A::Error> {
        skip_seq(seq)?;
        Ok(Object(None))
    }
}

impl<'de, T: Shape<'de>> SkippingValue<'de> for Objects<T> {
    fn other() -> Self {
        Objects(Vec::new())
    }
    fn map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        skip_map(map)?;
        Ok(Objects(Vec::new()))
    }
    fn seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        let mut out = Vec::new();
        while let Some(o) = seq.next_element::<Object<T>>()? {
            out.extend(o.0);
        }
        Ok(Objects(out))
    }
}

impl<'de, V: SkippingValue<'de>> Visitor<'de> for Skipping<V> {
    type Value = V;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V, A::Error> {
        V::map(map)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V, A::Error> {
        V::seq(seq)
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<V, E> {
        Ok(V::other())
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<V, E> {
        Ok(V::other())
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<V, E> {
        Ok(V::other())
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<V, E> {
        Ok(V::other())
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<V, E> {
        Ok(V::other())
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<V, E> {
        Ok(V::other())
    }
}

/// An object key: its index in the fields a [`Shape`] reads, without allocating
/// (a key with escapes arrives as a transient `&str`, and is compared all the same).
struct Field(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for Field {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl<'de> Visitor<'de> for Field {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object key")
    }
    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|f| *f == s))
    }
}

#[derive(Deserialize)]
struct LibraryPanel<'a> {
    #[serde(default, borrow)]
    uid: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
}

/// A datasource reference: a name or uid string (schemaVersion < 33), or
/// `{"type": …, "uid": …}`.
///
/// Read by hand rather than as `#[serde(untagged)]`: an untagged enum buffers
/// every value and builds an error for each variant that does not fit, 7% of a
/// large `mop validate`. It accepts exactly what the untagged form
/// (`UntaggedDsRef` in the tests) accepted, a differential test holds it to that:
/// a string, or an object whose `uid`, once at most, is a string or null, other
/// keys ignored.
enum DsRef<'a> {
    Name(Cow<'a, str>),
    Ref { uid: Option<Cow<'a, str>> },
}

impl<'de> Deserialize<'de> for DsRef<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = DsRef<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a datasource name or {\"uid\": …}")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                s: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(DsRef::Name(Cow::Borrowed(s)))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(DsRef::Name(Cow::Owned(s.to_owned())))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut uid = None;
                while let Some(is_uid) = map.next_key_seed(Field(&["uid"]))? {
                    if is_uid.is_none() {
                        map.next_value::<IgnoredAny>()?;
                    } else if uid.is_some() {
                        return Err(serde::de::Error::duplicate_field("uid"));
                    } else {
                        uid = Some(map.next_value::<Option<Cow<'de, str>>>()?);
                    }
                }
                Ok(DsRef::Ref { uid: uid.flatten() })
            }
        }
        d.deserialize_any(V)
    }
}

/// Everything the checks of one dashboard need, borrowed from its text.
struct Ctx<'a> {
    path: &'a str,
    text: &'a str,
    inputs: &'a HashMap<String, InputValue>,
    variables: HashSet<String>,
    /// Names and uids of the tenant's datasources.
    own: HashSet<String>,
    pyroscope_uid: String,
    pyroscope_at: Option<(u32, u32)>,
    diags: &'a mut Vec<Diagnostic>,
    ok: bool,
}

/// Byte offset of a borrowed piece of `text` (serde_json's `RawValue` borrows from
/// the input, so its slice lies inside it).
fn offset_in(text: &str, piece: &str) -> usize {
    (piece.as_ptr() as usize)
        .checked_sub(text.as_ptr() as usize)
        .filter(|o| *o <= text.len())
        .unwrap_or(0)
}

/// Where the key of a value is: `"key": value` with the value at `value_at`.
fn key_offset(text: &str, value_at: usize) -> usize {
    let before = text[..value_at].trim_end();
    let Some(before) = before.strip_suffix(':') else {
        return value_at;
    };
    let before = before.trim_end();
    // The key is a JSON string; its opening quote is the last unescaped `"`
    // before its closing one.
    let Some(body) = before.strip_suffix('"') else {
        return value_at;
    };
    let b = body.as_bytes();
    let mut i = b.len();
    while i > 0 {
        i -= 1;
        if b[i] == b'"' && (i == 0 || b[i - 1] != b'\\') {
            return i;
        }
    }
    value_at
}

impl<'a> Ctx<'a> {
    fn at(&self, raw: &RawValue) -> (u32, u32) {
        let o = offset_in(self.text, raw.get());
        diag::line_col(self.text, key_offset(self.text, o))
    }

    /// `$name`, `${name}`, `${name:format}` or `[[name]]` as a whole string.
    fn variable_name(s: &str) -> Option<&str> {
        if let Some(r) = s.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
            return Some(r.split(':').next().unwrap_or(r));
        }
        if let Some(r) = s.strip_prefix("[[").and_then(|r| r.strip_suffix("]]")) {
            return Some(r.split(':').next().unwrap_or(r));
        }
        s.strip_prefix('$')
            .filter(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    }

    /// Checks one `datasource` field of `what` (a panel, query, variable or annotation).
    fn datasource(&mut self, raw: Option<&RawValue>, what: &dyn Fn() -> String) {
        let Some(raw) = raw else { return };
        let Ok(r) = serde_json::from_str::<DsRef>(raw.get()) else {
            return;
        };
        let value = match r {
            DsRef::Name(n) => n,
            DsRef::Ref { uid: Some(u) } => u,
            // `{"type": "prometheus"}` alone is the org's default of that type.
            DsRef::Ref { uid: None } => return,
        };
        if value.is_empty() || BUILT_IN.contains(&value.as_ref()) {
            return;
        }
        if let Some(name) = Self::variable_name(&value) {
            // What `__inputs` resolves (grafana/grafana
            // `pkg/services/dashboardimport/utils/dash_template_evaluator.go`
            // replaces `${NAME}` of each input in every string).
            let braced = value.starts_with("${") && !value.contains(':');
            match self.inputs.get(name).filter(|_| braced) {
                Some(InputValue::Replace(v)) => {
                    if *v == self.pyroscope_uid && self.pyroscope_at.is_none() {
                        self.pyroscope_at = Some(self.at(raw));
                    }
                    return;
                }
                Some(InputValue::NoDatasource { plugin }) => {
                    let (l, c) = self.at(raw);
                    self.diags.push(
                        Diagnostic::error(self.path, l, c, format!("{}: datasource {value} is an `__inputs` entry of type {plugin:?}, and this tenant has no {plugin} datasource", what()))
                            .with_hint("MOP gives each tenant Mimir (prometheus), Loki, Tempo and Pyroscope datasources; point the panel at one of them or remove it"),
                    );
                    self.ok = false;
                    return;
                }
                None => {}
            }
            if self.variables.contains(name) {
                return;
            }
            let (l, c) = self.at(raw);
            self.diags.push(
                Diagnostic::error(self.path, l, c, format!("{}: datasource {value} is neither an `__inputs` entry nor a dashboard variable", what()))
                    .with_hint(format!("add a variable named {name} of type datasource to `templating.list`, or an `__inputs` entry {{\"name\": \"{name}\", \"type\": \"datasource\", \"pluginId\": \"prometheus\"}}")),
            );
            self.ok = false;
            return;
        }
        if self.own.contains(value.as_ref()) {
            if (value == "Pyroscope" || *value == self.pyroscope_uid) && self.pyroscope_at.is_none()
            {
                self.pyroscope_at = Some(self.at(raw));
            }
            return;
        }
        // Grafana stores the dashboard either way; the panel shows "datasource not
        // found" (`public/app/features/dashboard/state/DashboardMigrator.ts` keeps an
        // unknown name as `{uid: name}`).
        let (l, c) = self.at(raw);
        self.diags.push(
            Diagnostic::warning(self.path, l, c, format!("{}: datasource {value:?} is not one of this tenant's datasources", what()))
                .with_hint("the tenant's organisation has the datasources Mimir, Loki, Tempo (and Pyroscope) that MOP creates; use a datasource variable or `__inputs` so the panel follows the tenant"),
        );
    }

    fn panels(&mut self, panels: &[PanelInfo<'a>]) {
        for p in panels {
            self.panel(p);
        }
    }

    /// One panel, its queries, and the panels inside it.
    fn panel(&mut self, p: &PanelInfo<'a>) {
        let (id, title, datasource, library_panel) = (p.id, p.title, p.datasource, p.library_panel);
        // Decoded only for a diagnostic: almost every panel has none.
        let label = move || {
            let title = title
                .and_then(|t| serde_json::from_str::<String>(t.get()).ok())
                .unwrap_or_default();
            match id {
                Some(id) => format!("panel {title:?} (id {})", id.get()),
                None => format!("panel {title:?}"),
            }
        };
        self.datasource(datasource, &label);
        for t in &p.targets {
            self.datasource(t.datasource, &label);
        }
        if let Some(lp) = library_panel {
            let l = serde_json::from_str::<LibraryPanel>(lp.get()).ok();
            let (uid, name) = l
                .map(|l| (l.uid.unwrap_or_default(), l.name.unwrap_or_default()))
                .unwrap_or_default();
            let (line, col) = self.at(lp);
            // Grafana's import creates library panels from `__elements`
            // (`pkg/services/dashboardimport/service/service.go`,
            // `ImportLibraryPanelsForDashboard`); `POST /api/dashboards/db`, which
            // MOP uses, does not, so the panel shows only if the org has it.
            self.diags.push(
                Diagnostic::warning(self.path, line, col, format!("{}: library panel {name:?} (uid {uid:?}) is not created by MOP; the tenant's organisation shows it only if someone created it there", label()))
                    .with_hint("unlink the library panel in Grafana (its JSON then lives in the dashboard) and export again"),
            );
        }
        // Collapsed rows hold their panels inside the row panel.
        self.panels(&p.panels);
    }
}

pub(super) fn parse_dashboard(
    path: &str,
    tenant: &str,
    folder: &str,
    text: &str,
    body: super::Body,
    diags: &mut Vec<Diagnostic>,
) -> Option<Dashboard> {
    // One pass reads what the checks need (`Top`) and syntax-checks the rest; a
    // full tree for 10,000 dashboards costs more than all the rest of validation.
    if !text.trim_start().starts_with('{') {
        diags.push(Diagnostic::error(
            path,
            1,
            1,
            "a dashboard must be a JSON object",
        ));
        return None;
    }
    let top: Top = match serde_json::from_str::<Object<Top>>(text) {
        Ok(Object(Some(v))) => v,
        Ok(Object(None)) => {
            diags.push(Diagnostic::error(
                path,
                1,
                1,
                "a dashboard must be a JSON object",
            ));
            return None;
        }
        Err(e) => {
            let msg = e.to_string();
            // serde_json appends " at line L column C"; we print the position ourselves.
            let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
            diags.push(
                Diagnostic::error(
                    path,
                    u32::try_from(e.line()).unwrap_or(0),
                    u32::try_from(e.column()).unwrap_or(0),
                    format!("invalid JSON: {msg}"),
                )
                .with_hint("dashboards are Grafana's JSON model as 'Export → JSON' writes it"),
            );
            return None;
        }
    };
    let mut ok = true;

    // `__inputs`: Grafana's import asks for a datasource of each input's type and
    // replaces `${NAME}` in every string of the dashboard
    // (`pkg/services/dashboardimport/utils/dash_template_evaluator.go`). MOP
    // answers for the user: the tenant's datasource of that type.
    let own_uid = |backend: &str| uid::datasource_uid(tenant, backend);
    let mut inputs: HashMap<String, InputValue> = HashMap::new();
    if let Some(list) = top
        .inputs
        .and_then(|r| serde_json::from_str::<Vec<Input>>(r.get()).ok())
    {
        for i in list.into_iter().filter(|i| !i.name.is_empty()) {
            let v = match i.kind.as_str() {
                // Expressions are forced to `__expr__` by the evaluator.
                _ if i.plugin_id == "__expr__" => InputValue::Replace("__expr__".into()),
                "datasource" => match BACKENDS.iter().find(|(p, ..)| *p == i.plugin_id) {
                    Some((_, _, backend)) => InputValue::Replace(own_uid(backend)),
                    None => InputValue::NoDatasource {
                        plugin: i.plugin_id.clone(),
                    },
                },
                // A constant input: Grafana's import form offers its `value`.
                _ => {
                    let s = match &i.value {
                        Some(serde_json::Value::String(s)) => s.clone(),
                        Some(v) => v.to_string(),
                        None => String::new(),
                    };
                    let quoted = serde_json::Value::from(s).to_string();
                    InputValue::Replace(quoted[1..quoted.len() - 1].to_string())
                }
            };
            inputs.insert(i.name, v);
        }
    }

    // Variables by name: a `${DS_X}` that a dashboard variable resolves is fine.
    let mut own: HashSet<String> = HashSet::new();
    for (_, name, backend) in BACKENDS {
        own.insert(name.to_string());
        own.insert(own_uid(backend));
    }
    let mut ctx = Ctx {
        path,
        text,
        inputs: &inputs,
        variables: top.templating.iter().filter_map(Variable::name).collect(),
        own,
        pyroscope_uid: own_uid("pyroscope"),
        pyroscope_at: None,
        diags,
        ok: true,
    };
    for v in &top.templating {
        let name = v.name().unwrap_or_default();
        ctx.datasource(v.datasource, &|| format!("variable {name:?}"));
    }
    for a in &top.annotations {
        let name = a.name().unwrap_or_default();
        ctx.datasource(a.datasource, &|| format!("annotation {name:?}"));
    }
    ctx.panels(&top.panels);
    // schemaVersion < 16 keeps panels in `rows`; Grafana migrates them on load
    // (`apps/dashboard/pkg/migration/schemaversion/v16.go`), so they are accepted.
    for r in &top.rows {
        ctx.panels(&r.panels);
    }
    ok &= ctx.ok;
    let pyroscope_at = ctx.pyroscope_at;
    let diags = ctx.diags;

    // Grafana trims the uid, and an empty or non-string one (`MustString()`) makes
    // it generate a random uid (`pkg/services/dashboards/service/dashboard_service.go`,
    // `BuildSaveDashboardCommand`): MOP derives a stable one from the path instead.
    let uid_raw = top.uid;
    let given = uid_raw
        .and_then(|r| serde_json::from_str::<String>(r.get()).ok())
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty());
    let title_raw = top.title;
    // Both keys are usually at the end of an exported dashboard: one pass over
    // the text finds both positions (offset 0 is 1:1, where a missing one points).
    let key_at =
        |raw: Option<&RawValue>| raw.map_or(0, |r| key_offset(text, offset_in(text, r.get())));
    let [uid_pos, title_at] = diag::line_cols(
        text,
        [
            key_at(uid_raw.filter(|_| given.is_some())),
            key_at(title_raw),
        ],
    );
    let (uid, uid_at) = match (given, uid_raw) {
        (Some(u), Some(_)) => {
            let (l, c) = uid_pos;
            if !u
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                diags.push(
                    Diagnostic::error(
                        path,
                        l,
                        c,
                        format!("dashboard uid {u:?} has characters Grafana does not accept"),
                    )
                    .with_hint("use letters, digits, '-' and '_' (Grafana's `IsValidShortUID`)"),
                );
                ok = false;
            } else if u.len() > MAX_UID_LEN {
                diags.push(
                    Diagnostic::error(path, l, c, format!("dashboard uid {u:?} is {} characters; Grafana allows at most {MAX_UID_LEN}", u.len()))
                        .with_hint("shorten the uid; links to the dashboard use it, so pick one and keep it"),
                );
                ok = false;
            }
            (u, Some((l, c)))
        }
        _ => {
            let file = path.rsplit('/').next().unwrap_or(path);
            (uid::derived_dashboard_uid(folder, file), None)
        }
    };
    // Grafana trims the title and refuses an empty one (`ErrDashboardTitleEmpty`).
    let title = match title_raw.and_then(|r| serde_json::from_str::<String>(r.get()).ok()) {
        Some(t) if !t.trim().is_empty() => t.trim().to_string(),
        _ => {
            diags.push(
                Diagnostic::error(path, title_at.0, title_at.1, "dashboard has no `title`")
                    .with_hint("add \"title\": \"…\"; Grafana refuses a dashboard without one"),
            );
            ok = false;
            String::new()
        }
    };
    if !ok {
        return None;
    }
    let body = match body {
        super::Body::Build => {
            match build_body(text, &uid, uid_at.is_none(), tenant, folder, &inputs) {
                Ok(b) => b,
                // The one-pass read accepted the text, so serde_json cannot refuse
                // it here; should it ever, the dashboard is refused, not dropped.
                Err(e) => {
                    diags.push(Diagnostic::error(path, 1, 1, format!("invalid JSON: {e}")));
                    return None;
                }
            }
        }
        super::Body::Stand(s) => s,
    };
    Some(Dashboard {
        path: path.to_string(),
        folder: folder.to_string(),
        uid,
        uid_at,
        title,
        title_at,
        pyroscope_at,
        body,
    })
}

/// What `POST /api/dashboards/db` takes, from the file's top-level fields: compact
/// JSON with sorted keys, as Grafana's import would store it. The text was read
/// once already (it is valid JSON, an object); this second pass is made only for
/// a body that is used (render, apply, a plan's changed files).
fn build_body(
    text: &str,
    uid: &str,
    derived_uid: bool,
    tenant: &str,
    folder: &str,
    inputs: &HashMap<String, InputValue>,
) -> Result<std::sync::Arc<str>, serde_json::Error> {
    let file: BTreeMap<String, &RawValue> = serde_json::from_str(text)?;
    let derived = if derived_uid {
        serde_json::value::to_raw_value(uid).ok()
    } else {
        None
    };
    let mut obj: BTreeMap<&str, &RawValue> = file.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    // Instance-specific fields: Grafana assigns them, and they differ per org.
    obj.remove("id");
    obj.remove("version");
    // What Grafana's import drops before it stores the dashboard
    // (`pkg/services/dashboardimport/service/service.go`).
    obj.remove("__inputs");
    obj.remove("__requires");
    obj.remove("__elements");
    if let Some(d) = &derived {
        obj.insert("uid", d);
    }
    let folder_uid = uid::folder_uid(tenant, folder);
    let substitutions: HashMap<&str, &str> = inputs
        .iter()
        .filter_map(|(k, v)| match v {
            InputValue::Replace(r) => Some((k.as_str(), r.as_str())),
            InputValue::NoDatasource { .. } => None,
        })
        .collect();
    // The body Grafana takes, built once per file content and shared from here on.
    let mut body = String::with_capacity(obj.values().map(|v| v.get().len()).sum::<usize>() + 64);
    body.push_str(r#"{"dashboard":{"#);
    for (i, (k, v)) in obj.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&serde_json::Value::from(*k).to_string());
        body.push(':');
        if substitutions.is_empty() {
            minify_json_into(v.get(), &mut body);
        } else {
            minify_substituting_into(v.get(), &substitutions, &mut body);
        }
    }
    body.push_str(r#"},"folderUid":"#);
    body.push_str(&serde_json::Value::from(folder_uid).to_string());
    body.push('}');
    Ok(body.into())
}

/// Appends JSON text without the whitespace between tokens. The text is valid JSON
/// (serde_json checked it), so only strings need care; runs between whitespace are
/// copied whole, and every cut is at an ASCII byte, so at a character boundary.
pub(super) fn minify_json_into(json: &str, out: &mut String) {
    let bytes = json.as_bytes();
    let (mut i, mut run) = (0, 0);
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b' ' | b'\n' | b'\r' | b'\t' => {
                out.push_str(&json[run..i]);
                i += 1;
                run = i;
            }
            _ => i += 1,
        }
    }
    out.push_str(&json[run.min(json.len())..]);
}

/// [`minify_json_into`] that also replaces `${NAME}` of `__inputs` in string values
/// (not keys), as Grafana's import does: each match of `\$\{.+?\}` whose text is an
/// input is replaced, any other is kept.
pub(super) fn minify_substituting_into(json: &str, vars: &HashMap<&str, &str>, out: &mut String) {
    let b = json.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                let start = i;
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i = (i + 1).min(b.len());
                let s = &json[start..i];
                let is_key = json[i..].trim_start().starts_with(':');
                if is_key || !s.contains("${") {
                    out.push_str(s);
                } else {
                    substitute(s, vars, out);
                }
            }
            b' ' | b'\n' | b'\r' | b'\t' => i += 1,
            _ => {
                let start = i;
                while i < b.len() && !matches!(b[i], b'"' | b' ' | b'\n' | b'\r' | b'\t') {
                    i += 1;
                }
                out.push_str(&json[start..i]);
            }
        }
    }
}

fn substitute(s: &str, vars: &HashMap<&str, &str>, out: &mut String) {
    let mut rest = s;
    while let Some(p) = rest.find("${") {
        // `.+?`: at least one character before the closing brace.
        let Some(close) = rest
            .get(p + 3..)
            .and_then(|r| r.find('}'))
            .map(|c| p + 3 + c)
        else {
            break;
        };
        out.push_str(&rest[..p]);
        let name = &rest[p + 2..close];
        match vars.get(name) {
            Some(v) => out.push_str(v),
            None => out.push_str(&rest[p..=close]),
        }
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
}

/// The slug Grafana compares titles by (`pkg/infra/slugify/slugify.go`): lower
/// case, a space becomes `-`, `, " ' ? . ( )` and line breaks are dropped, `&` and
/// `@` become `and` and `at`, other characters become the hex of their UTF-8
/// bytes. (Grafana maps some accented letters to plain ones first; MOP keeps them
/// as hex, so two titles that differ only there are not reported.) An empty slug
/// or one over 50 bytes is a hash of the title, so distinct titles stay distinct.
fn title_slug(title: &str) -> Option<String> {
    let mut s = String::with_capacity(title.len());
    for c in title.trim().to_lowercase().chars() {
        match c {
            'a'..='z' | '0'..='9' | '_' | '-' => s.push(c),
            ' ' => s.push('-'),
            ',' | '"' | '\'' | '\n' | '\r' | '\0' | '?' | '.' | '(' | ')' => {}
            '&' => s.push_str("and"),
            '@' => s.push_str("at"),
            _ => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    s.push_str(&format!("{b:x}"));
                }
            }
        }
    }
    (!s.is_empty() && s.len() <= 50).then_some(s)
}

/// Checks across one tenant's dashboards: each tenant is its own Grafana
/// organisation, so uids and titles need only be unique within it.
pub(super) fn check_tenant_dashboards(dashboards: &[Dashboard], diags: &mut Vec<Diagnostic>) {
    let mut sorted: Vec<&Dashboard> = dashboards.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    // A uid names one dashboard per organisation
    // (`pkg/services/dashboards/database/database.go`, `ErrDashboardWithSameUIDExists`);
    // MOP posts with `overwrite: true`, so the second would replace the first.
    let mut uids: HashMap<&str, &Dashboard> = HashMap::new();
    // Grafana looks dashboards up by title slug within a folder
    // (`getExistingDashboardByTitleAndFolder`): without overwrite the second is
    // refused (`ErrDashboardWithSameNameInFolderExists`), with it the second takes
    // the first's place.
    let mut titles: HashMap<(&str, String), &Dashboard> = HashMap::new();
    // The same lookup matches folders of the whole organisation (`is_folder`), and
    // a dashboard named like one is refused even with overwrite
    // (`ErrDashboardWithSameNameAsFolder`, "Dashboard name cannot be the same as
    // folder"). MOP's folders are the folder directories.
    let folders: HashMap<String, &str> = sorted
        .iter()
        .filter_map(|d| title_slug(&d.folder).map(|s| (s, d.folder.as_str())))
        .collect();
    for d in sorted {
        if let Some(folder) = title_slug(&d.title).and_then(|s| folders.get(&s)) {
            let (l, c) = d.title_at;
            diags.push(
                Diagnostic::error(&d.path, l, c, format!("dashboard title {:?} is also the name of the folder {folder:?}; Grafana refuses a dashboard named like a folder of its organisation", d.title))
                    .with_hint("rename the dashboard's title or the folder directory"),
            );
        }
        if let Some(first) = uids.get(d.uid.as_str()).copied().or_else(|| {
            uids.insert(d.uid.as_str(), d);
            None
        }) {
            let (l, c) = d.uid_at.unwrap_or((1, 1));
            let first_at = match first.uid_at {
                Some((fl, _)) => format!("{}:{fl}", first.path),
                None => format!("{} (derived from its path)", first.path),
            };
            let what = if d.uid_at.is_some() {
                format!("dashboard uid {:?} is also used by {first_at}", d.uid)
            } else {
                format!(
                    "this dashboard's uid {:?}, derived from its path, is also used by {first_at}",
                    d.uid
                )
            };
            diags.push(
                Diagnostic::error(&d.path, l, c, what)
                    .with_hint("give each dashboard of a tenant its own uid; in one Grafana organisation one would overwrite the other"),
            );
        }
        if let Some(slug) = title_slug(&d.title)
            && let Some(first) = match titles.entry((d.folder.as_str(), slug)) {
                std::collections::hash_map::Entry::Occupied(o) => Some(*o.get()),
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(d);
                    None
                }
            }
        {
            let (l, c) = d.title_at;
            diags.push(
                Diagnostic::error(&d.path, l, c, format!("dashboard title {:?} is also used in folder {:?} by {}:{}", d.title, d.folder, first.path, first.title_at.0))
                    .with_hint("Grafana keeps one dashboard per title in a folder and would replace one with the other; rename one or move it to another folder"),
            );
        }
    }
}

/// Without a Pyroscope backend in `mop.yaml`, tenants get no Pyroscope datasource,
/// so panels that use it (directly or through an `__inputs` entry of type
/// `grafana-pyroscope-datasource`) show an error. Grafana still stores them.
pub(super) fn check_no_pyroscope<'a>(
    dashboards: impl Iterator<Item = &'a Dashboard>,
    diags: &mut Vec<Diagnostic>,
) {
    for d in dashboards {
        if let Some((l, c)) = d.pyroscope_at {
            diags.push(
                Diagnostic::warning(&d.path, l, c, "this dashboard uses the tenant's Pyroscope datasource, but mop.yaml configures no Pyroscope backend")
                    .with_hint("add backends.pyroscope to mop.yaml, or remove the profile panels"),
            );
        }
    }
}

#[cfg(test)]
mod ds_ref_tests {
    use super::*;

    /// The form `DsRef` had, kept as the oracle.
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum UntaggedDsRef<'a> {
        Name(#[serde(borrow)] Cow<'a, str>),
        Ref {
            #[serde(default, borrow)]
            uid: Option<Cow<'a, str>>,
        },
    }

    fn now(s: &str) -> Option<(bool, Option<String>)> {
        match serde_json::from_str::<DsRef>(s).ok()? {
            DsRef::Name(n) => Some((true, Some(n.into_owned()))),
            DsRef::Ref { uid } => Some((false, uid.map(Cow::into_owned))),
        }
    }

    fn before(s: &str) -> Option<(bool, Option<String>)> {
        match serde_json::from_str::<UntaggedDsRef>(s).ok()? {
            UntaggedDsRef::Name(n) => Some((true, Some(n.into_owned()))),
            UntaggedDsRef::Ref { uid } => Some((false, uid.map(Cow::into_owned))),
        }
    }

    #[test]
    fn reads_every_datasource_value_as_the_untagged_enum_did() {
        let cases = [
            r#""Mimir""#,
            r#""${DS_PROMETHEUS}""#,
            r#""esc\u0061ped \"name\"""#,
            r#""""#,
            r#"{"type": "prometheus", "uid": "abc"}"#,
            r#"{"uid": "a\nb"}"#,
            r#"{"u\u0069d": "escaped key"}"#,
            r#"{"type": "prometheus"}"#,
            r#"{}"#,
            r#"{"uid": null}"#,
            r#"{"uid": 5}"#,
            r#"{"uid": {"x": 1}}"#,
            r#"{"uid": "a", "uid": "b"}"#,
            r#"{"uid": null, "uid": "b"}"#,
            r#"{"type": {"nested": [1, 2]}, "uid": "x", "extra": true}"#,
            r#"[]"#,
            r#"["x"]"#,
            r#"[null]"#,
            r#"[5]"#,
            r#"["x", "y"]"#,
            r#"null"#,
            r#"true"#,
            r#"12"#,
            r#"-1.5e3"#,
        ];
        for c in cases {
            assert_eq!(now(c), before(c), "datasource value {c}");
        }
        // Both kinds of outcome are covered.
        assert!(cases.iter().any(|c| now(c).is_none()));
        assert!(cases.iter().filter(|c| now(c).is_some()).count() > 10);
    }
}
