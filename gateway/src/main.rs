fn main() -> anyhow::Result<()> {
    anyhow::bail!("mop-gateway is not implemented yet")
}
