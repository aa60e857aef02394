fn main() -> anyhow::Result<()> {
    anyhow::bail!("mop-agent is not implemented yet")
}
