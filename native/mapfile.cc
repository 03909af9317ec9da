// Files mapped into memory, for weights used in place: mapFile(path) maps the whole file
// (private, copy-on-write) and returns a handle; mapView(handle, offset, length) returns an
// ArrayBuffer over [offset, offset + length) of it. Node limits one ArrayBuffer made here to
// 4 GiB, so a checkpoint hands out one view per tensor rather than one for the file.
// Pages are shared with the page cache (and other processes reading the file), loaded on
// first touch and dropped by the kernel under memory pressure, so a model larger than free
// RAM still runs. MAP_PRIVATE with write permission: a caller that writes into a weight
// (training widens F32 matrices in place) gets its own copy of that page; the file is never
// modified. The mapping lives until the handle and every view are garbage-collected.
#include <node_api.h>

#include <atomic>
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

namespace {

struct Mapping {
  void* p = nullptr;
  size_t bytes = 0;
  std::atomic<long> refs{1};  // the handle, plus one per view
};

void release(Mapping* m) {
  if (m->refs.fetch_sub(1) == 1) {
#if DSV3_HAVE_MMAP
    if (m->p) munmap(m->p, m->bytes);
#endif
    delete m;
  }
}

void finalizeHandle(napi_env, void* data, void*) { release(static_cast<Mapping*>(data)); }
void finalizeView(napi_env, void*, void* hint) { release(static_cast<Mapping*>(hint)); }

napi_value fail(napi_env env, const char* code, const std::string& msg) {
  napi_throw_error(env, code, msg.c_str());
  return nullptr;
}

}  // namespace

napi_value MapFile(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  char path[4096];
  size_t len = 0;
  if (argc < 1 || napi_get_value_string_utf8(env, argv[0], path, sizeof path, &len) != napi_ok || len >= sizeof path - 1) {
    napi_throw_type_error(env, nullptr, "mapFile: path must be a string");
    return nullptr;
  }
#if DSV3_HAVE_MMAP
  const int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(env, "MISSING_FILE", std::string(path) + ": cannot be opened (" + std::strerror(errno) + ")");
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return fail(env, "BAD_INPUT", std::string(path) + ": is not a regular file");
  }
  Mapping* m = new Mapping();
  m->bytes = (size_t)st.st_size;
  if (m->bytes > 0) {
    void* p = mmap(nullptr, m->bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      close(fd);
      delete m;
      return fail(env, "BAD_INPUT", std::string(path) + ": cannot be mapped (" + std::strerror(err) + ")");
    }
    m->p = p;
  }
  close(fd);  // the mapping keeps the file
  napi_value handle;
  if (napi_create_external(env, m, finalizeHandle, nullptr, &handle) != napi_ok) {
    release(m);
    return fail(env, nullptr, "mapFile: cannot create the handle");
  }
  return handle;
#else
  return fail(env, nullptr, "mapFile: memory-mapped files are not supported on this platform");
#endif
}

napi_value MapSize(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  void* data = nullptr;
  if (argc < 1 || napi_get_value_external(env, argv[0], &data) != napi_ok || !data) {
    napi_throw_type_error(env, nullptr, "mapSize: not a mapping handle");
    return nullptr;
  }
  napi_value r;
  napi_create_double(env, (double)static_cast<Mapping*>(data)->bytes, &r);
  return r;
}

napi_value MapView(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  void* data = nullptr;
  double off = -1, len = -1;
  if (argc < 3 || napi_get_value_external(env, argv[0], &data) != napi_ok || !data ||
      napi_get_value_double(env, argv[1], &off) != napi_ok || napi_get_value_double(env, argv[2], &len) != napi_ok) {
    napi_throw_type_error(env, nullptr, "mapView(handle, offset, length): bad arguments");
    return nullptr;
  }
  Mapping* m = static_cast<Mapping*>(data);
  if (!(off >= 0 && len >= 0) || off != (double)(size_t)off || len != (double)(size_t)len ||
      (size_t)off > m->bytes || (size_t)len > m->bytes - (size_t)off) {
    napi_throw_range_error(env, nullptr, "mapView: the range is outside the mapped file");
    return nullptr;
  }
  napi_value ab;
  if (len == 0) {
    napi_create_arraybuffer(env, 0, nullptr, &ab);
    return ab;
  }
  m->refs.fetch_add(1);
  char* p = static_cast<char*>(m->p) + (size_t)off;
  if (napi_create_external_arraybuffer(env, p, (size_t)len, finalizeView, m, &ab) != napi_ok) {
    release(m);
    napi_throw_range_error(env, nullptr, "mapView: this runtime cannot make an ArrayBuffer of that size over a mapping");
    return nullptr;
  }
  return ab;
}

}  // namespace dsv3
