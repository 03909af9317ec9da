// mapFile(path): a whole file as an ArrayBuffer over a private, copy-on-write mapping.
// Checkpoint tensors are then used in place: no copy into the heap, pages shared with the
// page cache (and with other processes reading the same file), loaded on first touch, and
// dropped by the kernel under memory pressure, so a model larger than free RAM still runs.
// MAP_PRIVATE with write permission: a caller that writes into a weight (training widens
// F32 matrices in place) gets its own copy of that page; the file is never modified.
// The mapping lives as long as the ArrayBuffer: its finalizer unmaps it.
#include <node_api.h>

#include <cerrno>
#include <cstring>
#include <string>

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#define DSV3_HAVE_MMAP 1
#endif

namespace dsv3 {

#if DSV3_HAVE_MMAP
static void unmap(napi_env, void* data, void* hint) {
  munmap(data, reinterpret_cast<size_t>(hint));
}
#endif

napi_value MapFile(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  char path[4096];
  size_t len = 0;
  if (argc < 1 || napi_get_value_string_utf8(env, argv[0], path, sizeof path, &len) != napi_ok ||
      len >= sizeof path - 1) {
    napi_throw_type_error(env, nullptr, "mapFile: path must be a string");
    return nullptr;
  }
#if DSV3_HAVE_MMAP
  const int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    napi_throw_error(env, "MISSING_FILE", (std::string(path) + ": cannot be opened (" + std::strerror(errno) + ")").c_str());
    return nullptr;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    napi_throw_error(env, "BAD_INPUT", (std::string(path) + ": is not a regular file").c_str());
    return nullptr;
  }
  const size_t bytes = (size_t)st.st_size;
  napi_value ab;
  if (bytes == 0) {
    close(fd);
    napi_create_arraybuffer(env, 0, nullptr, &ab);
    return ab;
  }
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  close(fd);  // the mapping keeps the file
  if (p == MAP_FAILED) {
    napi_throw_error(env, "BAD_INPUT", (std::string(path) + ": cannot be mapped (" + std::strerror(errno) + ")").c_str());
    return nullptr;
  }
  if (napi_create_external_arraybuffer(env, p, bytes, unmap, reinterpret_cast<void*>(bytes), &ab) != napi_ok) {
    munmap(p, bytes);
    napi_throw_error(env, nullptr, "mapFile: this runtime does not allow external ArrayBuffers");
    return nullptr;
  }
  return ab;
#else
  napi_throw_error(env, nullptr, "mapFile: memory-mapped files are not supported on this platform");
  return nullptr;
#endif
}

}  // namespace dsv3
