#include "args.h"

#include <cmath>

namespace revpatch_addon {

void ThrowArgument(Napi::Env env, const std::string& message) {
  Napi::Error error = Napi::TypeError::New(env, message);
  error.Set("code", Napi::String::New(env, "E_INVALID_ARGUMENT"));
  throw error;
}

std::string GetString(Napi::Env env, Napi::Value value, const char* what) {
  if (!value.IsString()) ThrowArgument(env, std::string(what) + " must be a string");
  return value.As<Napi::String>().Utf8Value();
}

uint64_t GetUint(Napi::Env env, Napi::Value value, const char* what) {
  if (!value.IsNumber()) ThrowArgument(env, std::string(what) + " must be a number");
  double d = value.As<Napi::Number>().DoubleValue();
  if (!(d >= 0) || d > 9007199254740991.0 || std::floor(d) != d) {
    ThrowArgument(env, std::string(what) + " must be a non-negative integer below 2^53");
  }
  return static_cast<uint64_t>(d);
}

revpatch::Digest GetDigest(Napi::Env env, Napi::Value value, const char* what) {
  revpatch::Digest digest{};
  if (!revpatch::DigestFromHex(GetString(env, value, what), &digest)) {
    ThrowArgument(env, std::string(what) + " must be 64 hex digits");
  }
  return digest;
}

Napi::Object GetObject(Napi::Env env, Napi::Value value, const char* what) {
  if (!value.IsObject()) ThrowArgument(env, std::string(what) + " must be an object");
  return value.As<Napi::Object>();
}

Napi::Value Arg(const Napi::CallbackInfo& info, size_t i) {
  return i < info.Length() ? info[i] : info.Env().Undefined();
}

ViewSpec GetViewSpec(Napi::Env env, Napi::Value value) {
  Napi::Object object = GetObject(env, value, "view");
  ViewSpec spec;
  spec.base = GetString(env, object.Get("base"), "view.base");
  spec.base_tree = GetString(env, object.Get("baseTree"), "view.baseTree");
  Napi::Value layers = object.Get("layers");
  if (!layers.IsArray()) ThrowArgument(env, "view.layers must be an array");
  Napi::Array array = layers.As<Napi::Array>();
  for (uint32_t i = 0; i < array.Length(); ++i) {
    spec.layers.push_back(GetString(env, array.Get(i), "view.layers[i]"));
  }
  return spec;
}

}  // namespace revpatch_addon
