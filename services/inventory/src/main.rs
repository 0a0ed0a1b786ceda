fn main() -> std::process::ExitCode {
    lab_runtime::launch::main(inventory::run)
}
