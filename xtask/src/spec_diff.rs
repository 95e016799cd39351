pub fn run(_a: &[String], _d: bool) -> crate::Result {
    Err("not yet".into())
}
