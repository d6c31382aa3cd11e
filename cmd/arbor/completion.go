package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/alecthomas/kong"
	"github.com/willabides/kongplete"
)

// Tab completion: the shell runs arbor itself with COMP_LINE set (bash's
// 'complete -C'); kongplete answers from the command-line model, so the
// completions always match the flags of this binary.

// complete answers a shell's completion request, if this is one, and makes
// kong's exit callback fire; otherwise it does nothing.
func complete(parser *kong.Kong) {
	defer recoverExit()
	kongplete.Complete(parser, kongplete.WithErrorHandler(func(err error) {
		fmt.Fprintln(parser.Stderr, errorLine(fmt.Errorf("completion: %w", err)))
	}))
}

// completionScripts are the shells' setup lines; {{bin}} is the path of
// this binary and {{name}} the command's name.
var completionScripts = map[string]string{
	"bash": "complete -o default -C '{{bin}}' {{name}}\n",
	"zsh":  "autoload -U +X bashcompinit && bashcompinit\ncomplete -o default -C '{{bin}}' {{name}}\n",
	"fish": `function __complete_{{name}}
    set -lx COMP_LINE (commandline -cp)
    test -z (commandline -ct)
    and set COMP_LINE "$COMP_LINE "
    '{{bin}}'
end
complete -f -c {{name}} -a "(__complete_{{name}})"
`,
}

type completionCmd struct {
	Shell string `arg:"" enum:"bash,zsh,fish" help:"The shell: bash, zsh or fish."`
}

func (completionCmd) Help() string {
	return "Completes commands and flags. Load it in the shell's startup file:\n\n" +
		"Example:\n" +
		"  source <(arbor completion bash)      # in ~/.bashrc\n" +
		"  source <(arbor completion zsh)       # in ~/.zshrc\n" +
		"  arbor completion fish | source       # in ~/.config/fish/config.fish"
}

func (c completionCmd) Run(e *env) error {
	bin, err := os.Executable()
	if err == nil {
		bin, err = filepath.Abs(bin)
	}
	if err != nil {
		return fmt.Errorf("completion: where is this binary: %w", err)
	}
	if strings.ContainsRune(bin, '\'') {
		return fmt.Errorf("completion: the binary's path %q holds a quote", bin)
	}
	script := strings.NewReplacer("{{bin}}", bin, "{{name}}", "arbor").Replace(completionScripts[c.Shell])
	_, err = fmt.Fprint(e.stdout, script)
	return err
}
