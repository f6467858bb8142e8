package deploy

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestImageBuildsWithBuildah builds the whole Dockerfile, as it is, with buildah (Debian's
// daemonless builder, installed by scripts/ops-deps), then reads the image's configuration
// and runs the binary it holds.
//
// No container registry is reachable here, so the two base images are stand-ins the test
// makes and tags with the names the Dockerfile asks for: golang:<GO_VERSION> is this
// machine's Go toolchain with a shell and sort (what the builder stage's RUN lines use), and
// gcr.io/distroless/static-debian12:nonroot is CA certificates, /etc/passwd with user 65532
// and nothing else. Modules come from this machine's module cache (a file:// GOPROXY mounted
// into the RUN steps). What it proves: the Dockerfile parses; its stages, COPYs, ARGs, cache
// mounts and RUN lines build the binary in a container from the .dockerignore'd context; the
// final image has the user, entrypoint, command, environment, ports, health check and labels
// deploy/README.md describes; and its binary runs. What it cannot: that the real base images
// behave as the stand-ins do.
func TestImageBuildsWithBuildah(t *testing.T) {
	if _, err := exec.LookPath("buildah"); err != nil {
		t.Fatalf("buildah not found (run scripts/ops-deps, which installs Debian's buildah): %v", err)
	}
	root := repoRoot()
	store := t.TempDir()
	bah := func(args ...string) string {
		t.Helper()
		full := append([]string{"--storage-driver", "vfs", "--root", filepath.Join(store, "root"), "--runroot", filepath.Join(store, "run")}, args...)
		cmd := exec.Command("buildah", full...)
		cmd.Env = append(os.Environ(), "BUILDAH_ISOLATION=chroot")
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		if err := cmd.Run(); err != nil {
			t.Fatalf("buildah %s: %v\n%s\n%s", strings.Join(args, " "), err, tailOf(out.String()), tailOf(errOut.String()))
		}
		return strings.TrimSpace(out.String())
	}
	t.Cleanup(func() {
		_ = exec.Command("buildah", "--storage-driver", "vfs", "--root", filepath.Join(store, "root"), "--runroot", filepath.Join(store, "run"), "rm", "--all").Run()
	})
	dockerfile, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^ARG GO_VERSION=(\S+)$`).FindSubmatch(dockerfile)
	if m == nil {
		t.Fatal("Dockerfile has no ARG GO_VERSION=<version>")
	}

	// golang:<GO_VERSION>: the host's toolchain, a shell, sort, CA certificates.
	golang := bah("from", "scratch")
	mnt := bah("mount", golang)
	goroot := hostGoEnv("GOROOT")
	for _, dir := range []string{"usr/local", "bin", "usr/bin", "etc/ssl/certs", "tmp", "root", "go"} {
		if err := os.MkdirAll(filepath.Join(mnt, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("cp", "-a", goroot, filepath.Join(mnt, "usr/local/go")).CombinedOutput(); err != nil {
		t.Fatalf("copying GOROOT %s: %v %s", goroot, err, out)
	}
	for dst, src := range map[string]string{"bin/sh": "/bin/sh", "usr/bin/sort": "/usr/bin/sort", "etc/ssl/certs/ca-certificates.crt": "/etc/ssl/certs/ca-certificates.crt"} {
		copyWithLibs(t, src, filepath.Join(mnt, dst), mnt)
	}
	bah("umount", golang)
	bah("config", "--env", "PATH=/usr/local/go/bin:/go/bin:/usr/bin:/bin", "--env", "GOPATH=/go", "--env", "GOTOOLCHAIN=local",
		"--env", "GOPROXY=file:///goproxy", "--env", "GOSUMDB=off", "--workingdir", "/go", golang)
	bah("commit", "-q", golang, "golang:"+string(m[1]))

	// gcr.io/distroless/static-debian12:nonroot: CA certificates, passwd, group, /tmp.
	static := bah("from", "scratch")
	mnt = bah("mount", static)
	for name, body := range map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
		"etc/group":  "root:x:0:\nnonroot:x:65532:\n",
	} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(mnt, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(mnt, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	copyWithLibs(t, "/etc/ssl/certs/ca-certificates.crt", filepath.Join(mnt, "etc/ssl/certs/ca-certificates.crt"), "")
	if err := os.MkdirAll(filepath.Join(mnt, "tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	bah("umount", static)
	bah("config", "--user", "65532:65532", static)
	bah("commit", "-q", static, "gcr.io/distroless/static-debian12:nonroot")

	const version = "buildah-test-1"
	start := time.Now()
	bah("bud", "--pull=never", "--format", "docker", "--layers=false",
		"--volume", filepath.Join(hostGoEnv("GOMODCACHE"), "cache", "download")+":/goproxy:ro",
		"--build-arg", "VERSION="+version, "--build-arg", "REVISION=r", "--build-arg", "CREATED=c",
		"-t", "localhost/sse-gateway:test", "-f", filepath.Join(root, "Dockerfile"), root)
	t.Logf("buildah built the Dockerfile in %v", time.Since(start).Round(time.Second))

	var info struct {
		Docker struct {
			Config struct {
				User         string
				Entrypoint   []string
				Cmd          []string
				Env          []string
				ExposedPorts map[string]struct{}
				Labels       map[string]string
				Healthcheck  struct{ Test []string }
			} `json:"config"`
		}
	}
	if err := json.Unmarshal([]byte(bah("inspect", "--type", "image", "localhost/sse-gateway:test")), &info); err != nil {
		t.Fatal(err)
	}
	cfg := info.Docker.Config
	for _, c := range []struct {
		what string
		ok   bool
	}{
		{"user 65532:65532", cfg.User == "65532:65532"},
		{"entrypoint /usr/local/bin/sse-gateway", slices.Equal(cfg.Entrypoint, []string{"/usr/local/bin/sse-gateway"})},
		{"cmd serve", slices.Equal(cfg.Cmd, []string{"serve"})},
		{"env SSE_GATEWAY_ADDR=:8080", slices.Contains(cfg.Env, "SSE_GATEWAY_ADDR=:8080")},
		{"env SSE_GATEWAY_METRICS_ADDR=:9090", slices.Contains(cfg.Env, "SSE_GATEWAY_METRICS_ADDR=:9090")},
		{"ports 8080 and 9090", len(cfg.ExposedPorts) == 2 && cfg.ExposedPorts["8080/tcp"] == struct{}{} && cfg.ExposedPorts["9090/tcp"] == struct{}{}},
		{"health check runs the binary", slices.Equal(cfg.Healthcheck.Test, []string{"CMD", "/usr/local/bin/sse-gateway", "healthcheck", "--addr", "127.0.0.1:8080"})},
		{"label version", cfg.Labels["org.opencontainers.image.version"] == version},
	} {
		if !c.ok {
			t.Errorf("image config: want %s; got %+v", c.what, cfg)
		}
	}

	// The binary the image holds: it runs, and it is the one built with VERSION.
	ctr := bah("from", "--pull=never", "localhost/sse-gateway:test")
	mnt = bah("mount", ctr)
	bin := filepath.Join(t.TempDir(), "sse-gateway")
	copyWithLibs(t, filepath.Join(mnt, "usr/local/bin/sse-gateway"), bin, "")
	bah("umount", ctr)
	if err := os.Chmod(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != version {
		t.Fatalf("the image's binary says %q (%v), want %q", out, err, version)
	}
}

// copyWithLibs copies the file src to dst; when libRoot is set, also the shared libraries
// src needs (ldd), to the same paths under libRoot.
func copyWithLibs(t *testing.T, src, dst, libRoot string) {
	t.Helper()
	if err := copyFile(src, dst); err != nil {
		t.Fatalf("copy %s: %v", src, err)
	}
	if libRoot == "" {
		return
	}
	out, _ := exec.Command("ldd", src).Output()
	for _, lib := range regexp.MustCompile(`(/\S+\.so[\S]*)`).FindAllString(string(out), -1) {
		target := filepath.Join(libRoot, lib)
		if _, err := os.Stat(target); err == nil {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := copyFile(lib, target); err != nil {
			t.Fatalf("copy %s: %v", lib, err)
		}
	}
}

func tailOf(s string) string {
	if len(s) > 3000 {
		return "..." + s[len(s)-3000:]
	}
	return s
}
