namespace CohortBridge.CohortService;

/// <summary>Settings of section <c>Cohorts</c> (environment: <c>Cohorts__InlineChangeLimit</c>, ...).</summary>
public sealed class CohortsOptions
{
    public const string SectionName = "Cohorts";

    /// <summary>
    /// Largest number of added + removed users a CohortUpdated carries inline; above it Added/Removed are null and
    /// MustReread is true.
    /// </summary>
    public int InlineChangeLimit { get; set; } = 1000;

    /// <summary>
    /// Largest number of added + removed users whose sets a version keeps in the change log. Above it the entry records
    /// only that the version happened (<c>sets_omitted</c>); the changes endpoint then reports the log incomplete and
    /// consumers re-read the membership, as CohortUpdated.MustReread already tells them to. Snapshots and archiving are
    /// the only writers of sets this large (change requests carry at most 1,000 identifiers each): logging the 10M
    /// ordinals of one snapshot took 7.9 s and 40 MB.
    /// </summary>
    public int ChangeLogSetLimit { get; set; } = 100_000;

    /// <summary>Users per UserDirectoryChanged message.</summary>
    public int DirectoryBatchSize { get; set; } = 1000;

    /// <summary>
    /// Messages the CohortExportReceived consumer handles at once. Imports of one cohort still apply one at a time, in
    /// request order (cohort row lock and <see cref="Imports.SequenceGate"/>). It also bounds how many imports of one
    /// busy cohort queue up in the process and so are applied together (<see cref="Imports.CohortLanes"/>).
    /// </summary>
    public int ConcurrentMessageLimit { get; set; } = 32;

    /// <summary>
    /// Largest number of identifiers applied in one transaction when change imports of one cohort queue up
    /// (<see cref="Imports.CohortLanes"/>); an import larger than this is still applied, alone.
    /// </summary>
    public int BatchMaxIdentifiers { get; set; } = 50_000;

    /// <summary>
    /// Matches running at once (<see cref="Matching.MatchingSlots"/>): change imports matched ahead of their turn
    /// (<see cref="Imports.ChangesBatch.PrepareAsync"/>) and the matches of completing snapshots. Around the database's
    /// core count: matching side by side beyond that only adds contention (when snapshot chunks were still matched as
    /// they arrived, a 10M snapshot took 107 s with every delivered chunk matching at once, 88 s with 2), and a large
    /// snapshot's match holds up to 1 GB of database memory for its hash.
    /// </summary>
    public int MatchConcurrency { get; set; } = 2;

    /// <summary>
    /// How long an import waits for its cohort's previous request (sequence - 1) before applying without it. The wait
    /// only outlasts a moment when that request never reached the broker (the gateway answered 503) or sits in the
    /// error queue; consumer retries of a failing predecessor take up to about 20 s, hence the default. Zero turns the
    /// ordering off (imports apply in delivery order).
    /// </summary>
    public TimeSpan SequenceGapTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>How often the outbox dispatcher looks for rows that an immediate publish did not take.</summary>
    public TimeSpan OutboxPollInterval { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>
    /// How long the user sets that only a replay needs are kept (<see cref="Imports.ReplayHistorySweeper"/>): those in
    /// the CohortUpdated each import stored to publish again on redelivery (~10 kB for a 1,000-identifier request), and
    /// those of the change log, from which a lagging SegmentService replica catches up. After it a redelivered import
    /// publishes its event with counts only (MustReread), and a replica further behind re-reads the cohort. Import rows,
    /// their statistics and the versions stay. Zero or less keeps everything.
    /// </summary>
    public TimeSpan ReplayRetention { get; set; } = TimeSpan.FromDays(7);

    /// <summary>
    /// How often <see cref="Imports.ReplayHistorySweeper"/> looks for history past <see cref="ReplayRetention"/> and
    /// <see cref="ImportRetention"/>.
    /// </summary>
    public TimeSpan ReplaySweepInterval { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>
    /// How long a finished import is kept: its row (status and statistics, ~0.6 kB per request), its change-log
    /// entries and, for a snapshot, its snapshot row. After it <see cref="Imports.ReplayHistorySweeper"/> deletes them;
    /// import status then answers 404, and a message accepted before it that has no import row (moved back from an
    /// error queue that late) is refused to the error queue, because whether it was applied can no longer be told.
    /// Measured by the gateway's acceptance time, like the gateway's <c>Gateway:ImportRetention</c>, which should be
    /// the same. Zero or less keeps everything; otherwise at least <see cref="ReplayRetention"/>, which must be on.
    /// </summary>
    public TimeSpan ImportRetention { get; set; } = TimeSpan.FromDays(30);

    /// <summary>Largest number of errors a bulk upsert response lists (all rejected lines are counted).</summary>
    public int MaxReportedErrors { get; set; } = 1000;

    public CohortsTestHooks TestHooks { get; set; } = new();
}

/// <summary>Fault injection for tests only; never set in production.</summary>
public sealed class CohortsTestHooks
{
    /// <summary>
    /// When the import with this id has been committed, the process ends at once (Environment.FailFast) before
    /// publishing CohortUpdated: a crash between commit and publish.
    /// </summary>
    public Guid? CrashAfterCommitImportId { get; set; }
}
