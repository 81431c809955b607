pub async fn run() -> anyhow::Result<bool> {
    Ok(true)
}
