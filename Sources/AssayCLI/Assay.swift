import ArgumentParser
import Foundation
import AssayCommon
import Pipeline
import Scan
import TensorCore

/// Exit codes (README.md, "Exit codes"). The CLI is the only place that exits.
enum ExitStatus: Int32 {
    case clean = 0
    case findings = 1
    case invalidInput = 2
    case nothingScanned = 3
    case usage = 4
}

struct Assay: ParsableCommand {
    static let version = ScanPipeline.toolVersion
    static let configuration = CommandConfiguration(
        commandName: "assay",
        abstract: "Compare a fine-tuned transformer with its base and report where behaviour diverges.",
        discussion: """
        Exit codes: 0 clean, 1 findings, 2 invalid input or error, 3 nothing could be scanned, 4 usage.
        """,
        version: version,
        subcommands: [ScanCommand.self, TriggerSearchCommand.self, SweepCommand.self, BaselineCommand.self, Inspect.self, Audit.self,
                      ManifestCommand.self, Suites.self, Tokenize.self, Detokenize.self, ChatTemplateCommand.self, Logits.self,
                      Generate.self, DiffWeights.self, Bench.self, SweepWorkerCommand.self]
    )
}

/// Writes to standard error without buffering surprises.
func printError(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}

/// Writes to standard output and flushes (reports are often piped).
func emit(_ text: String) {
    FileHandle.standardOutput.write(Data((text.hasSuffix("\n") ? text : text + "\n").utf8))
}

@main
enum Main {
    static func main() {
        checkKernelEnvironment()
        if Set(CommandLine.arguments.dropFirst()) == ["--version", "--verbose"] {
            emit(verboseVersion())
            exit(ExitStatus.clean.rawValue)
        }
        let command: ParsableCommand
        do {
            command = try Assay.parseAsRoot()
        } catch {
            // --help and --version are clean exits; everything else is a usage error (exit 4).
            let code = Assay.exitCode(for: error)
            if code == .success {
                emit(Assay.fullMessage(for: error))
                exit(ExitStatus.clean.rawValue)
            }
            printError(Assay.fullMessage(for: error))
            exit(ExitStatus.usage.rawValue)
        }
        do {
            var c = command
            try c.run()
        } catch let code as ExitCode {
            exit(code.rawValue)
        } catch ScanError.nothingToScan(let message) {
            printError("error: \(message)")
            exit(ExitStatus.nothingScanned.rawValue)
        } catch {
            // ArgumentParser's own outcomes (help for a bare `assay`, validation failures) keep
            // their meaning; any other error is invalid input or a failure: exit 2.
            switch Assay.exitCode(for: error) {
            case .success:
                emit(Assay.fullMessage(for: error))
                exit(ExitStatus.clean.rawValue)
            case .validationFailure:
                printError(Assay.fullMessage(for: error))
                exit(ExitStatus.usage.rawValue)
            default:
                printError("error: \(String(describing: error))")
                exit(ExitStatus.invalidInput.rawValue)
            }
        }
        exit(ExitStatus.clean.rawValue)
    }
}

/// Run-time choices about the machine, made before any command runs:
/// - `ASSAY_ISA` must name a kernel variant this CPU has (else exit 2; a typo must not silently
///   test the default path).
/// - When OpenBLAS fell back to generic kernels on a CPU with AVX2 or AVX-512, Assay restarts
///   itself once with `OPENBLAS_CORETYPE` set. OpenBLAS picks its kernels in a library
///   constructor, before `main`, so setting the variable in-process is too late; re-executing
///   `/proc/self/exe` with the same arguments is the one way to fix it without the user's help.
///   `ASSAY_BLAS_RESTARTED` guards against a loop. A user's own `OPENBLAS_CORETYPE` is kept.
func checkKernelEnvironment() {
    do { try ISA.validateEnvironment() } catch {
        printError("error: \(error)")
        exit(ExitStatus.invalidInput.rawValue)
    }
    let env = ProcessInfo.processInfo.environment
    guard env["ASSAY_BLAS_RESTARTED"] == nil,
          let core = BLAS.preferredCoreType(current: BLAS.coreName, isa: ISA.detected, explicit: env["OPENBLAS_CORETYPE"])
    else { return }
    setenv("OPENBLAS_CORETYPE", core, 1)
    setenv("ASSAY_BLAS_RESTARTED", BLAS.coreName, 1)
    let argv = CommandLine.unsafeArgv
    execv("/proc/self/exe", argv)
    // exec failed (no /proc): carry on with the generic kernels; only SVDs are slower.
}

/// `assay --version --verbose`: the version and the kernels this process runs.
func verboseVersion() -> String {
    let env = ProcessInfo.processInfo.environment
    var lines = ["assay \(Assay.version)"]
    lines.append("kernels: \(ISA.active) (CPU supports \(ISA.detected)\(env["ASSAY_ISA"].map { ", ASSAY_ISA=\($0)" } ?? ""))")
    var blas = "blas: \(BLAS.coreName) (\(BLAS.configuration))"
    if let was = env["ASSAY_BLAS_RESTARTED"] {
        blas += ", restarted with OPENBLAS_CORETYPE=\(env["OPENBLAS_CORETYPE"] ?? "?") (OpenBLAS had picked \(was))"
    }
    lines.append(blas)
    return lines.joined(separator: "\n")
}
