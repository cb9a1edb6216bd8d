# Extra configuration merged into `bao server -dev` by `credctl dev` and the tests (`-config=`).
# OpenBao refuses to enable audit devices through the API: they are declared here. ${audit_log} is filled in
# with a path under the stack's state directory.

audit "file" "file" {
  description = "every request and response, secrets HMAC'd"
  options {
    file_path = "${audit_log}"
    mode      = "0600"
  }
}
