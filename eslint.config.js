import js from '@eslint/js';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'build/', '.local/', 'node_modules/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  { files: ['**/*.mjs', '**/*.js'], languageOptions: { globals: globals.node } },
  // Tests pick fields out of parsed JSON documents.
  { files: ['test/**/*.ts'], rules: { '@typescript-eslint/no-explicit-any': 'off' } },
  // A promise nobody awaits loses its rejection: type-aware, everywhere
  // (node:test's describe/it are fine unawaited).
  {
    files: ['src/**/*.ts', 'test/**/*.ts', 'bench/**/*.ts'],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': [
        'error',
        {
          allowForKnownSafeCalls: [
            {
              from: 'package',
              package: 'node:test',
              name: [
                'describe',
                'it',
                'test',
                'suite',
                'before',
                'after',
                'beforeEach',
                'afterEach',
              ],
            },
          ],
        },
      ],
    },
  },
  // The fronts (CLI, MCP) are thin: they reach the library only through its
  // public entry, src/index.ts, or the leaf modules it re-exports
  // (errors, paths, limits), which the CLI's start-up loads without the rest
  // of the library (docs/architecture.md "Layers").
  {
    files: ['src/cli/*.ts', 'src/mcp/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              regex: '^\\.\\./(?!(index|errors|paths|limits)\\.js$)',
              message: 'A front imports the library only from its public entry (../index.js).',
            },
          ],
        },
      ],
    },
  },
  {
    files: ['src/cli/commands/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              regex: '^\\.\\./\\.\\./(?!(index|errors|paths|limits)\\.js$)',
              message: 'A front imports the library only from its public entry (../../index.js).',
            },
          ],
        },
      ],
    },
  },
  // The library never reaches into a front.
  {
    files: ['src/**/*.ts'],
    ignores: ['src/cli/**', 'src/mcp/**'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              regex: '(^|/)(cli|mcp)/',
              message: 'Library code does not import the CLI or the MCP server.',
            },
          ],
        },
      ],
    },
  },
  // Library code never prints or exits: the fronts (the CLI) and the
  // executables' entry points own the process.
  {
    files: ['src/**/*.ts'],
    ignores: ['src/cli/**', 'src/supervisors/qemu/main.ts', 'src/supervisors/qemu/monitor-main.ts'],
    rules: {
      'no-console': 'error',
      'no-restricted-properties': [
        'error',
        {
          object: 'process',
          property: 'exit',
          message: 'Library code returns or throws; the entry point exits.',
        },
      ],
    },
  },
  {
    rules: {
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_' },
      ],
      'no-constant-condition': ['error', { checkLoops: false }],
    },
  },
);
