// Placeholder until the LogQL parser lands; accepts everything so the crate builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    Log,
    Metric,
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogqlError {
    pub offset: usize,
    pub message: String,
}
pub fn parse(_q: &str) -> Result<QueryKind, LogqlError> {
    Ok(QueryKind::Metric)
}
