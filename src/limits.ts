/**
 * The bounds of every sized or timed option, named once. The library's
 * checks, the spec file's and MCP's schemas, the CLI's parsers and the
 * supervisor's wire schema all take them from here, so a limit cannot be
 * one thing in one front and another in the next.
 */
import { z } from 'zod';

/** Virtual CPUs of a workspace. */
export const CPUS = { min: 1, max: 64 } as const;
/** Guest memory, MiB. */
export const MEMORY_MIB = { min: 128, max: 65536 } as const;
/** A workspace's root disk, MiB (--disk-size). */
export const DISK_MIB = { min: 64, max: 2 * 1024 * 1024 } as const;
/** The longest boot timeout, stop grace or wait the supervisor accepts, ms. */
export const MAX_WAIT_MS = 3_600_000;

export const CpusSchema = z.number().int().min(CPUS.min).max(CPUS.max);
export const MemoryMiBSchema = z.number().int().min(MEMORY_MIB.min).max(MEMORY_MIB.max);
export const DiskMiBSchema = z.number().int().min(DISK_MIB.min).max(DISK_MIB.max);
