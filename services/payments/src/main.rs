fn main() -> std::process::ExitCode {
    lab_runtime::launch::main(payments::run)
}
