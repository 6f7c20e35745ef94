import AssayCommon

/// Decides what an imported callable in a pickle means. The decision is an ALLOWLIST: only what
/// PyTorch and NumPy weight files need is accepted silently (compare PyTorch's own
/// `torch/_weights_only_unpickler.py`); every other import is a finding. A denylist of known
/// code-execution gadgets only raises the severity of a finding to `critical` — it never makes
/// anything acceptable, so an unlisted gadget (`pkgutil.resolve_name`, `pip.main`, …) is still
/// reported.
public enum CallablePolicy {
    public enum Verdict: Sendable, Equatable {
        /// Needed by weight files; no finding.
        case allowed
        /// Allowed, but worth a note at this severity (e.g. `_codecs.encode`).
        case noted(Severity, String)
        /// Not on the allowlist: a finding at this severity, with the reason.
        case denied(Severity, String)
    }

    /// Exact qualified names a weights pickle may import.
    public static let allowed: Set<String> = {
        var s: Set<String> = [
            "collections.OrderedDict",
            "torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor_v3",
            "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state",
            "torch._utils._rebuild_sparse_tensor", "torch._utils._rebuild_nested_tensor", "torch._utils._rebuild_qtensor",
            "torch._utils._rebuild_meta_tensor_no_storage", "torch._utils._rebuild_device_tensor_from_numpy",
            "torch._utils._rebuild_device_tensor_from_cpu_tensor", "torch._utils._rebuild_wrapper_subclass",
            "torch._tensor._rebuild_from_type_v2",
            "torch.storage.UntypedStorage", "torch.storage.TypedStorage", "torch.UntypedStorage", "torch.TypedStorage",
            "torch.device", "torch.Size", "torch.Tensor", "torch.nn.parameter.Parameter", "torch.serialization._get_layout",
            "torch.strided", "torch.sparse_coo", "torch.sparse_csr", "torch.sparse_csc", "torch.sparse_bsr", "torch.sparse_bsc",
            "torch._mkldnn", "torch.contiguous_format", "torch.channels_last", "torch.channels_last_3d", "torch.preserve_format",
            "torch.per_tensor_affine", "torch.per_channel_affine", "torch.per_tensor_symmetric", "torch.per_channel_symmetric",
            "torch.per_channel_affine_float_qparams",
            "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
            "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
            "numpy.ndarray", "numpy.dtype",
            "builtins.set", "builtins.frozenset", "builtins.bytearray", "builtins.slice", "builtins.complex",
        ]
        for d in ["float32", "float", "float64", "double", "float16", "half", "bfloat16", "complex32", "chalf", "complex64",
                  "cfloat", "complex128", "cdouble", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "short", "int32",
                  "int", "int64", "long", "bool", "qint8", "quint8", "qint32", "quint4x2", "quint2x4", "float8_e4m3fn",
                  "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu", "float4_e2m1fn_x2",
                  "bits1x8", "bits2x4", "bits4x2", "bits8", "bits16"] {
            s.insert("torch." + d)
        }
        return s
    }()

    /// Modules from which any import is a code-execution gadget (the first dotted component, or
    /// any component of a dotted attribute path: `torch.os.system` reaches `os`).
    public static let dangerousModules: Set<String> = [
        "os", "posix", "nt", "subprocess", "_posixsubprocess", "socket", "_socket", "ssl", "runpy", "importlib",
        "pkgutil", "pip", "_pip", "setuptools", "distutils", "marshal", "shutil", "sys", "webbrowser", "code", "codeop",
        "pty", "pickle", "_pickle", "cPickle", "pickletools", "dill", "cloudpickle", "joblib", "shelve", "ctypes",
        "_ctypes", "multiprocessing", "asyncio", "signal", "platform", "commands", "popen2", "timeit", "cProfile",
        "profile", "pdb", "bdb", "trace", "doctest", "types", "inspect", "gc", "tempfile", "glob", "io", "_io",
        "urllib", "http", "ftplib", "smtplib", "telnetlib", "requests", "httplib", "zipimport", "linecache",
        "_thread", "threading", "imp", "site", "sysconfig", "ensurepip", "venv", "idlelib",
        "antigravity", "this", "pydoc", "xmlrpc", "logging",
    ]

    /// Exact names that are critical wherever they live.
    public static let dangerousCallables: Set<String> = [
        "builtins.eval", "builtins.exec", "builtins.compile", "builtins.getattr", "builtins.setattr", "builtins.delattr",
        "builtins.open", "builtins.__import__", "builtins.input", "builtins.breakpoint", "builtins.globals",
        "builtins.locals", "builtins.vars", "builtins.apply", "builtins.execfile", "builtins.file", "builtins.reload",
        "builtins.type", "builtins.memoryview", "builtins.help", "builtins.exit", "builtins.quit",
        "functools.partial", "functools.reduce", "functools.partialmethod",
        "operator.attrgetter", "operator.methodcaller", "operator.itemgetter", "operator.call",
        "torch.load", "torch.hub", "torch.serialization.load", "torch.serialization._load", "torch.storage._load_from_bytes",
        "torch.jit.load", "torch.package", "torch._C", "torch.utils.cpp_extension",
        "numpy.load", "numpy.lib.npyio.load", "numpy.loadtxt", "numpy.fromfile", "numpy.testing",
        "numpy.f2py", "numpy.distutils", "numpy.lib.format.read_array",
        "copyreg._reconstructor", "copyreg.__newobj__", "copyreg.__newobj_ex__",
        "__main__",
    ]

    /// Attribute names that make any dotted path critical (`torch.serialization.pickle.loads`).
    static let dangerousAttributes: Set<String> = [
        "system", "popen", "exec", "eval", "compile", "__import__", "__builtins__", "__globals__", "__subclasses__",
        "__getattribute__", "__reduce__", "__reduce_ex__", "__code__", "__class__", "__dict__", "__init__", "__call__",
        "loads", "load", "spawn", "spawnl", "spawnv", "execv", "execve", "execl", "execlp", "execvp", "fork",
        "run", "call", "check_call", "check_output", "Popen", "getoutput", "getstatusoutput", "import_module",
        "resolve_name", "main", "open", "getattr", "setattr", "write", "remove", "unlink", "rmtree",
    ]

    public static func classify(_ qualified: String) -> Verdict {
        if allowed.contains(qualified) { return .allowed }
        // torch.<Dtype>Storage classes (torch.FloatStorage, torch.BFloat16Storage, …) and
        // numpy.dtypes.<Name>DType (NumPy 2's dtype classes).
        let parts = qualified.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        if parts.count == 2, parts[0] == "torch", parts[1].hasSuffix("Storage"),
           parts[1].dropLast(7).allSatisfy({ $0.isLetter || $0.isNumber }) {
            return .allowed
        }
        if parts.count == 3, parts[0] == "numpy", parts[1] == "dtypes", parts[2].hasSuffix("DType"),
           parts[2].allSatisfy({ $0.isLetter || $0.isNumber }) {
            return .allowed
        }
        if qualified == "_codecs.encode" {
            return .noted(.info, "_codecs.encode (used by NumPy and protocol-2 pickles to carry bytes) can only encode text")
        }
        if let reason = dangerReason(qualified, parts: parts) { return .denied(.critical, reason) }
        return .denied(.high, "\(qualified) is not on the allowlist of callables that weight files need")
    }

    static func dangerReason(_ q: String, parts: [String]) -> String? {
        if dangerousCallables.contains(q) { return "\(q) can execute code or read and write files" }
        for i in 1..<max(parts.count, 2) where i <= parts.count {
            let prefix = parts.prefix(i).joined(separator: ".")
            if dangerousCallables.contains(prefix) { return "\(q) is part of \(prefix), which can execute code" }
        }
        if let m = parts.first(where: { dangerousModules.contains($0) }) {
            return "\(q) comes from '\(m)', a module whose callables can execute code, spawn processes, open files or sockets, "
                + "or load further pickles"
        }
        if parts.count > 1, let a = parts.dropFirst().first(where: { dangerousAttributes.contains($0) }) {
            return "\(q) names '\(a)', which can execute code or load further code"
        }
        if q.hasPrefix("copyreg._extension_registry[") {
            return "\(q): extension codes resolve through a registry the loading process controls"
        }
        if q == "?" { return "an import whose names are computed at load time" }
        return nil
    }
}
