package e2e

import (
	"encoding/json"
	"path/filepath"
	"testing"
)

// requireNodeModules fails unless e2e/node/node_modules was installed from the committed lockfile.
func requireNodeModules(t testing.TB) string {
	t.Helper()
	requireExecutable(t, "node")
	dir := filepath.Join(repoRoot(t), "e2e", "node")
	requireInstalled(t, "e2e/node/node_modules", filepath.Join(dir, "node_modules", ".e2e-deps-stamp"), depsHint,
		filepath.Join(dir, "package.json"), filepath.Join(dir, "package-lock.json"))
	return dir
}

// startNode runs `node <script> <json opts>` in e2e/node; it ends when the test does.
func startNode(t testing.TB, name, script string, opts any) *scriptProc {
	t.Helper()
	dir := requireNodeModules(t)
	arg, _ := json.Marshal(opts)
	return startScript(t, name, dir, "node", script, string(arg))
}
